from transformers import AutoTokenizer


def test_tokenizer_has_llama_conventions(tiny_tokenizer, tmp_path):
    assert tiny_tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    ids = tiny_tokenizer("USER: <video>\nfrom 05 to 37").input_ids
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.convert_tokens_to_ids("<video>")) == 1
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True).endswith("from 05 to 37")

    tiny_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("USER: <video>\nfrom 05 to 37").input_ids == ids
