"""medtune.data: dataset readers, record types, prompt templates and collators."""

from medtune.data.arrow import report_record, reports_dataset, vqa_dataset, vqa_record
from medtune.data.collators import IGNORE_INDEX, BlipVQACollator, LlavaCollator
from medtune.data.demo import demo_dataset
from medtune.data.hf_vqa import parse_columns, read_hf_vqa
from medtune.data.images import ImageLoadError, check_images, load_image
from medtune.data.instructions import (
    REPORT_INFERENCE_INSTRUCTION,
    REPORT_TRAINING_INSTRUCTIONS,
    report_instruction,
)
from medtune.data.llava_json import read_llava_json, read_llava_questions, write_llava_json
from medtune.data.mimic import mimic_studies, read_mimic_split_csv
from medtune.data.records import DataError, Rejection, ReportRecord, VQARecord, write_rejections
from medtune.data.reports import read_reports, read_reports_table
from medtune.data.splits import LayoutError
from medtune.data.templates import IMAGE_PLACEHOLDER, PromptTemplate, get_template
from medtune.data.torch_dataset import RecordDataset
from medtune.data.vqa import read_vqa, read_vqa_table

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "REPORT_INFERENCE_INSTRUCTION",
    "REPORT_TRAINING_INSTRUCTIONS",
    "BlipVQACollator",
    "DataError",
    "ImageLoadError",
    "LayoutError",
    "LlavaCollator",
    "PromptTemplate",
    "RecordDataset",
    "Rejection",
    "ReportRecord",
    "VQARecord",
    "check_images",
    "demo_dataset",
    "get_template",
    "load_image",
    "mimic_studies",
    "parse_columns",
    "read_hf_vqa",
    "read_llava_json",
    "read_llava_questions",
    "read_mimic_split_csv",
    "read_reports",
    "read_reports_table",
    "read_vqa",
    "read_vqa_table",
    "report_instruction",
    "report_record",
    "reports_dataset",
    "vqa_dataset",
    "vqa_record",
    "write_llava_json",
    "write_rejections",
]
