"""Spec 4.2 / 4.7: CLIP BPE ids, special ids, decoding and the original's truncation rules."""
from clip4idc.tokenizer import EOT_ID, PAD_ID, SOT_ID, postprocess_caption


def test_spec_ids(tokenizer):
    assert tokenizer.encode("the small red metal cube changed to blue") == [518, 2442, 736, 4044, 11353, 4907, 531, 1746]
    assert tokenizer.encode("there is no difference") == [997, 533, 871, 4731]
    assert tokenizer.encode(".") == [269]
    assert tokenizer.tokenize("isn't") == ["isn</w>", "'t</w>"]
    assert tokenizer.encode("The Blue CUBE") == tokenizer.encode("the blue cube")  # lowercased


def test_special_ids_and_vocab(tokenizer):
    assert (SOT_ID, EOT_ID, PAD_ID) == (49406, 49407, 0)
    assert len(tokenizer.encoder) == 49408
    assert tokenizer.encoder["<|startoftext|>"] == SOT_ID and tokenizer.encoder["<|endoftext|>"] == EOT_ID
    assert tokenizer.decoder[0] == "!" and tokenizer.decoder[1] == '"'


def test_decode_and_truncation(tokenizer):
    ids = tokenizer.encode("the red cube moved") + [EOT_ID, 518, PAD_ID]
    text = tokenizer.decode(ids)
    assert text.startswith("the red cube moved ") and "<|endoftext|>" in text
    assert postprocess_caption(text) == "the red cube moved"
    # pad id 0 decodes to "!" and cuts the caption there (kept, spec 9.13)
    assert postprocess_caption(tokenizer.decode(tokenizer.encode("a cube") + [PAD_ID, 518])) == "a cube"
    assert postprocess_caption("wow! great") == "wow"
    assert tokenizer.convert_ids_to_tokens([518, 736]) == "the red "
