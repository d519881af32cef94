"""PiTe as transformers classes. Importing this package registers them with the Auto* factories."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # the top-level name needs torchvision

from .configuration_pite import PiteConfig
from .modeling_pite import PiteForConditionalGeneration, PiteModel, PitePreTrainedModel
from .pipelines import register_pipelines
from .processing_pite import PiteProcessor
from .video_processing_pite import PiteVideoProcessor

# Every model Auto class gives the full model with its heads. AutoModel too, against transformers' convention
# (base model): PiTe is used as `AutoModel.from_pretrained("pite-7b")`, and the heads are the point of PiTe.
AutoConfig.register("pite", PiteConfig)
AutoModel.register(PiteConfig, PiteForConditionalGeneration)
AutoModelForImageTextToText.register(PiteConfig, PiteForConditionalGeneration)
AutoModelForMultimodalLM.register(PiteConfig, PiteForConditionalGeneration)
AutoVideoProcessor.register(PiteConfig, PiteVideoProcessor)
AutoProcessor.register(PiteConfig, PiteProcessor)
# saved checkpoints carry the code and an `auto_map`, so they load with trust_remote_code without this package
PiteConfig.register_for_auto_class()
PiteModel.register_for_auto_class("AutoModel")
PiteForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
register_pipelines()  # "video-qa", "video-temporal-grounding", "video-dense-captioning"

__all__ = [
    "PiteConfig",
    "PiteForConditionalGeneration",
    "PiteModel",
    "PitePreTrainedModel",
    "PiteProcessor",
    "PiteVideoProcessor",
]
