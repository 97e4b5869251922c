"""medtune.eval: generation, Med-VQA and text metrics, predictions files, paper-style tables and plots."""

from medtune.data.run_files import eval_dir_name
from medtune.eval.bertscore import DEFAULT_BERTSCORE_MODEL, resolve_local_encoder
from medtune.eval.generate import PAPER_GENERATION, generate_answers
from medtune.eval.normalize import normalize_answer
from medtune.eval.plots import plot_loss, read_loss_history
from medtune.eval.predictions import prediction_rows, read_predictions, write_predictions
from medtune.eval.report import write_report
from medtune.eval.runs import load_runs
from medtune.eval.scores import format_scores, score_predictions, vqa_summary, write_eval_outputs
from medtune.eval.text import count_tokens, score_text
from medtune.eval.vqa import SCORER_VARIANTS, SCORER_VERSION, ItemScore, score_vqa, score_vqa_per_item

__all__ = [
    "DEFAULT_BERTSCORE_MODEL",
    "PAPER_GENERATION",
    "SCORER_VARIANTS",
    "SCORER_VERSION",
    "ItemScore",
    "count_tokens",
    "eval_dir_name",
    "format_scores",
    "generate_answers",
    "load_runs",
    "normalize_answer",
    "plot_loss",
    "prediction_rows",
    "read_loss_history",
    "read_predictions",
    "resolve_local_encoder",
    "score_predictions",
    "score_text",
    "score_vqa",
    "score_vqa_per_item",
    "vqa_summary",
    "write_eval_outputs",
    "write_predictions",
    "write_report",
]
