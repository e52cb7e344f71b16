"""Every Trainer and LightningModule of the package: the one Lightning assembly (trainer.py:
seed, the config's callbacks and loggers, the module, the Trainer; ``fit_network``,
``fit_stacked``, ``evaluate``, ``predict``), the classifier (module.py), its stacked form for S
networks at once (stacked.py, stacked_data.py), the callbacks (callbacks.py, checkpoint.py) and
the optimizer (optim.py).

Layer: engine; imports the parts and base/, never a job or a command.
"""
