"""Conditioning strategies: condition Samples -> tensors (see base.Conditioner and batch.ConditionBatch)."""
