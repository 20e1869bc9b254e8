from deepscope.data.dataset import Dataset, batches

__all__ = ["Dataset", "batches"]
