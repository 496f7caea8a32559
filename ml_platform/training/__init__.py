"""Training: turn a training set into a PyTorch model (schema, preprocessing, modules, loop).

Only torch, numpy and safetensors are imported here (pandas inside the functions that take
DataFrames): the trainer also runs on GPU images without Dagster. `trainer.train` is the DataFrame
entry point, `loop.train_arrays` the loop on arrays, `ddp` its DistributedDataParallel context,
`distributed` the torchrun launcher and `model.TrainedModel` the saved model; `flavors` puts this
trainer and others behind one protocol.
"""
