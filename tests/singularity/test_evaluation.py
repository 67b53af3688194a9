"""itm_eval on hand-made matrices (multi-GT both ways), QA exact match, VQA accuracy (spec 5.6, 5.8)."""
import numpy as np

from singularity.evaluation import itm_eval, qa_exact_match, vqa_accuracy


def test_itm_eval_multi_text_gt():
    # 2 images, 3 texts; image 0 <-> texts 0,1; image 1 <-> text 2
    img2txt = {0: [0, 1], 1: [2]}
    txt2img = {0: 0, 1: 0, 2: 1}
    i2t = np.array([[0.1, 0.9, 0.5], [0.8, 0.7, 0.6]])  # image0: best GT rank 0; image1: GT text2 at rank 2
    t2i = np.array([[0.2, 0.9], [0.9, 0.1], [0.1, 0.5]])  # text0 wrong (rank1), text1 right, text2 right
    res = itm_eval(i2t, t2i, txt2img, img2txt)
    assert res["txt_r1"] == 50.0 and res["txt_r5"] == 100.0
    assert res["img_r1"] == 66.67 and res["img_r10"] == 100.0
    assert res["txt_r_mean"] == round((50 + 100 + 100) / 3, 2)
    assert res["r_mean"] == round(((50 + 100 + 100) / 3 + (200 / 3 + 100 + 100) / 3) / 2, 2)
    assert set(res) == {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean",
                        "r_mean"}


def test_itm_eval_multi_vision_gt():
    # one text matching images 0 and 1 (ssv2 style): txt2img lists, img2txt ints
    txt2img = {0: [0, 1], 1: [2]}
    img2txt = {0: 0, 1: 0, 2: 1}
    t2i = np.array([[0.1, 0.9, 0.5], [0.9, 0.1, 0.0]])
    i2t = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    res = itm_eval(i2t, t2i, txt2img, img2txt)
    assert res["img_r1"] == 50.0 and res["txt_r1"] == 66.67


def test_qa_exact_match_counts_missing_as_wrong():
    anno = [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "ring"}, {"question_id": 3, "answer": "x"}]
    preds = [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "bar"}]
    assert qa_exact_match(preds, anno) == {"overall": 33.33}


def test_vqa_accuracy_hand_made():
    anno = [
        {"question_id": 1, "answer": ["two"] * 2 + ["2"] * 8, "answer_type": "number"},
        {"question_id": 2, "answer": ["yes"] * 10, "answer_type": "yes/no"},
        {"question_id": 3, "answer": ["net"] * 2 + ["netting"] * 8, "answer_type": "other"},
    ]
    preds = [{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "no"},
             {"question_id": 3, "answer": "the net"}]
    res = vqa_accuracy(preds, anno)
    # q1: "two" -> "2" (digit normalisation): 8 or 7 matches in each leave-one-out subset -> 1.0
    assert res["number"] == 100.0 and res["yes/no"] == 0.0
    # q3: "the net" -> "net": 2 matches (1 when one of them is left out): mean of min(1, m/3) over 10 subsets
    expected = (8 * (2 / 3) + 2 * (1 / 3)) / 10
    assert res["other"] == round(100 * expected, 2)
    assert res["overall"] == round(100 * (1 + 0 + expected) / 3, 2)
