import pytest
from huggingface_hub import ModelCard

from modeling_pite.hub import BENCHMARKS, REPORTED_RESULTS, TRAINING_STAGES, create_model_card


def test_card_names_every_stage_and_metric_and_parses_back(tmp_path):
    card = create_model_card("pite-7b", repo_id="someone/pite-7b")
    text = str(card)
    for stage in TRAINING_STAGES:
        assert stage.name in text
    for benchmark_key, metrics in REPORTED_RESULTS["pite-7b"].items():
        assert BENCHMARKS[benchmark_key].dataset_name in text
        for metric in metrics:
            assert f"| {metric} |" in text
    assert 'pipeline("video-qa", model="someone/pite-7b")' in text
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    parsed = {(r.dataset_type, r.dataset_config, r.metric_name): r.metric_value for r in data.eval_results}
    expected = {
        (BENCHMARKS[b].dataset_type, BENCHMARKS[b].dataset_config, metric): value
        for b, metrics in REPORTED_RESULTS["pite-7b"].items()
        for metric, value in metrics.items()
    }
    assert parsed == expected
    assert data.pipeline_tag == "video-text-to-text" and "lmsys/vicuna-7b-v1.5" in data.base_model


def test_card_with_own_results_and_without_results():
    card = create_model_card("my-pite", results={"activitynet_grounding": {"mIoU": 12.5}}, results_source="my run")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("mIoU", 12.5)]
    assert "No evaluation results" in str(create_model_card("untrained-pite"))
    with pytest.raises(ValueError, match="unknown metric 'BLEU'"):
        create_model_card("x", results={"activitynet_dense_captioning": {"BLEU": 1.0}})
    with pytest.raises(ValueError, match="unknown benchmark"):
        create_model_card("x", results={"kinetics": {"accuracy": 1.0}})
