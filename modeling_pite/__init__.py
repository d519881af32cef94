"""PiTe as transformers classes. Importing this package registers them with the Auto* factories."""
