"""Training runs, ``gpunet train``'s engine, one concept a module:

- ``settings``: ``TrainConfig``, each field declaring its flag, help and recipe and resume rules;
- ``loop``: ``fit``, epoch after epoch into the run folder, checkpoints, metrics and plots;
- ``epoch``: one epoch of ``gpunet.trainer.Trainer`` steps, the learning rate, the divergence checks;
- ``run_folder``: the folder's lock, its output paths, and a checkpoint's fitness to resume;
- ``plot_paths``: whether a plot can be written where a flag asks;
- ``evaluation``: accuracy, confusion matrix, predictions, the labels' range;
- ``errors``: what a run can end with.
"""
from ..trainer import Trainer, forward_backward
from .epoch import CHECK_EVERY, learning_rate, train_epoch
from .errors import DivergenceError, Interrupted, OutOfMemory, RunFolderError, is_out_of_memory, out_of_memory_advice
from .evaluation import accuracy, confusion_matrix, model_predictions, model_sizes, require_labels_in_range
from .loop import build_model, build_optimizer, fit
from .plot_paths import check_plot_path
from .run_folder import LOCK_NAME, TWO_D_DATASETS, check_outputs, lock_run_folder, resume
from .settings import OPTIMIZERS, RECIPE_SETTINGS, RUN_DEFINING, TrainConfig

__all__ = ["TrainConfig", "OPTIMIZERS", "RECIPE_SETTINGS", "RUN_DEFINING", "fit", "train_epoch", "learning_rate",
           "CHECK_EVERY", "Trainer", "forward_backward", "build_model", "build_optimizer", "accuracy",
           "confusion_matrix", "model_predictions", "model_sizes", "require_labels_in_range", "DivergenceError",
           "Interrupted", "OutOfMemory", "RunFolderError", "is_out_of_memory", "out_of_memory_advice",
           "check_plot_path", "check_outputs", "lock_run_folder", "resume", "LOCK_NAME", "TWO_D_DATASETS"]
