from .decoder import Memory, reorder_state
from .seq2seq import Seq2Seq, TrainingLoss, build_model, count_params, inference_path

__all__ = ["Memory", "Seq2Seq", "TrainingLoss", "build_model", "count_params", "inference_path", "reorder_state"]
