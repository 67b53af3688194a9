"""Text cleaning and the [CLS]-only tokenisation (spec 3.7, pitfall 9.3 K)."""
from singularity.data.annotations import answer_weights, pre_text
from singularity.models.tokenizer import TextTokenizer


def test_pre_text_example():
    assert pre_text("A man's dog-runs, (quickly)!  <person> said: 'hi'/bye") == "a mans dog runs quickly person said hi bye"


def test_tokenizer_layout(syn_dir):
    tok = TextTokenizer(str(syn_dir / "bert_vocab"))
    out = tok(["red square"], 5)
    ids = out["input_ids"][0].tolist()
    vocab = {w: i for i, w in enumerate((syn_dir / "bert_vocab" / "vocab.txt").read_text().split())}
    assert ids == [vocab["[CLS]"], vocab["red"], vocab["square"], 0, 0]  # no trailing [SEP]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    ans = tok(["red [SEP]"], 5)["input_ids"][0].tolist()
    assert ans == [vocab["[CLS]"], vocab["red"], vocab["[SEP]"], 0, 0]
    trunc = tok(["a red square is there"], 3)["input_ids"][0].tolist()
    assert trunc == [vocab["[CLS]"], vocab["a"], vocab["red"]]  # keeps max_length - 1 word pieces


def test_answer_weights():
    answers, weights = answer_weights(["net", "net", "netting", "net"])
    assert answers == ["net [SEP]", "netting [SEP]"] and weights == [0.75, 0.25]
    assert answer_weights("yes") == (["yes [SEP]"], [1.0])
