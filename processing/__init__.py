"""The data side of PiTe: dataset formats and loaders, collators, the annotation pipeline, the synthetic world."""
