"""DistilBERT: distil a BERT-like masked LM into a half-depth student (Sanh, Debut, Chaumond, Wolf 2019).

    from essence.distilbert import PRESETS, Distiller, distill, student_from_teacher
    cfg = PRESETS.build("quick", ["train.steps=200"])
    result = distill(cfg, run, teacher="path/to/bert-mlm")   # or: essence distilbert distill --teacher DIR
    # result.output: a DistilBertForMaskedLM directory that plain transformers loads
"""

from essence.distilbert.config import PRESETS, DistilConfig
from essence.distilbert.loss import cosine_loss, mlm_loss, soft_target_loss, triple_loss
from essence.distilbert.model import layer_map, load_student, load_teacher, student_from_teacher

__all__ = ["PRESETS", "DistilConfig", "Distiller", "TeacherCache", "distill", "train_teacher", "student_from_teacher",
           "layer_map", "load_teacher", "load_student", "soft_target_loss", "mlm_loss", "cosine_loss", "triple_loss",
           "mask_tokens", "mlm_scores"]


def __getattr__(name):  # heavy modules on first use
    if name in ("Distiller", "TeacherCache", "distill", "train_teacher"):
        from essence.distilbert import train
        return getattr(train, name)
    if name == "mask_tokens":
        from essence.distilbert.data import mask_tokens
        return mask_tokens
    if name == "mlm_scores":
        from essence.distilbert.evaluate import mlm_scores
        return mlm_scores
    raise AttributeError(name)
