"""The one training loop below generators and benchmark: accelerate for device, DistributedDataParallel and mixed
precision; atomic, exactly resumable checkpoints; optional EMA; precision and threads through histosynth.speed; a
progress bar, a loss log and a snapshot hook. Generators train through it (histosynth.generators.training, their
layer over it), and so do the benchmark's downstream segmenters and its label-consistency segmenter."""

from histosynth.training.checkpoints import (
    CHECKPOINT_PREFIX,
    STATE_FILE,
    TrainingStateError,
    latest_checkpoint,
    read_state,
)
from histosynth.training.loop import WARMUP_STEPS, TrainingStopped, TrainResult, run_training
from histosynth.training.precision import cpu_bf16_forward, resolve_mixed_precision
from histosynth.training.step import (
    Batch,
    BatchFn,
    LoopConfig,
    LoopSettings,
    OptimizerSpec,
    RNGState,
    SampleStream,
    StepContext,
    TrainStep,
    step_generator,
    step_rng,
)

__all__ = [
    "CHECKPOINT_PREFIX", "STATE_FILE", "WARMUP_STEPS", "Batch", "BatchFn", "LoopConfig", "LoopSettings", "OptimizerSpec",
    "RNGState", "SampleStream", "StepContext", "TrainResult", "TrainStep", "TrainingStateError", "TrainingStopped",
    "cpu_bf16_forward", "latest_checkpoint", "read_state", "resolve_mixed_precision", "run_training",
    "step_generator", "step_rng",
]
