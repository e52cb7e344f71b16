# ruff: noqa: E501  (the review's error lines, whole)
"""The bad inputs of the reliability review of 2026-12-07 (its cases with a command of
``python -m memorization.run``, ``scores``, ``sensitivity`` or ``easy_hard`` that exits 2),
kept as the project's own tests so that none regresses: each is one line, the review's first error line, before anything runs (the checks
of every command's start, in-process here) or, for what only the data can tell, at the job's
start (slow: a subprocess each). The case names are the review's."""

from __future__ import annotations

import pytest
import torch

from memorization.cli.entry import precheck
from memorization.jobs.validate import validate
from tests.conftest import run_cli

# (case, overrides, the error line it starts with)
BEFORE_START = [
    ('01_noise_p_1.5', ['noise.p=1.5', 'trainer.max_epochs=3'],
     'noise.p=1.5 must be a number in [0, 1]: the probability that a training sample is corrupted'),
    ('02_noise_p_neg', ['noise.p=-0.1', 'trainer.max_epochs=3'],
     'noise.p=-0.1 must be a number in [0, 1]: the probability that a training sample is corrupted'),
    ('03_noise_p_abc', ['noise.p=abc', 'trainer.max_epochs=3'],
     'noise.p=abc must be a number'),
    ('04_noise_p_null', ['noise.p=null', 'trainer.max_epochs=3'],
     'noise.p=null is not allowed: give it a value (its keys: python -m memorization.run --cfg job --package noise)'),
    ('05_noise_unknown_option', ['noise=foo', 'trainer.max_epochs=3'],
     "noise=foo is not an option of 'noise'; choose one of: gaussian, gaussian_sample, label_flip, label_uniform, none, random_labels, random_pixels, shuffled_pixels, structured"),
    ('06_unknown_group', ['nosuchgroup=bar', 'trainer.max_epochs=3'],
     'nosuchgroup is not a key of the config: check the spelling (its keys: python -m memorization.run --cfg job --package nosuchgroup)'),
    ('07_unknown_top_key', ['foo=1', 'trainer.max_epochs=3'],
     'foo is not a key of the config: check the spelling (its keys: python -m memorization.run --cfg job --package foo)'),
    ('08_typo_noise_pp', ['noise.pp=0.2', 'trainer.max_epochs=3'],
     'noise.pp is not a key of noise: check the spelling (its keys: python -m memorization.run --cfg job --package noise)'),
    ('09_typo_trainer_max_epoch', ['trainer.max_epoch=3', 'trainer.max_epochs=3'],
     'trainer.max_epoch is not a key of trainer: check the spelling (its keys: python -m memorization.run --cfg job --package trainer)'),
    ('10_forced_typo_plus_noise_pp', ['+noise.pp=0.2', 'trainer.max_epochs=3'],
     'noise.pp is not a key of noise; its keys: name, p, seed, apply_to_test'),
    ('11_max_epochs_abc', ['trainer.max_epochs=abc'],
     'trainer.max_epochs=abc must be an integer >= 1'),
    ('12_batch_size_0', ['data.batch_size=0', 'trainer.max_epochs=3'],
     'data.batch_size=0 must be an integer >= 1'),
    ('13_lr_negative', ['optim.lr=-0.001', 'trainer.max_epochs=3'],
     'optim.lr=-0.001 must be a number > 0'),
    ('16_model_alexnet_on_digits', ['model=alexnet', 'trainer.max_epochs=3'],
     'model.in_shape=[1, 8, 8]: alexnet with stem=auto takes 32x32 (3x3 stem) or 64x64 (11x11 stem) inputs; set model.stem explicitly for other sizes'),
    ('17_mlp_depth_0', ['model.depth=0', 'trainer.max_epochs=3'],
     'model.depth=0 must be an integer >= 1'),
    ('18_mlp_width_abc', ['model.width=abc', 'trainer.max_epochs=3'],
     'model.width=abc must be an integer >= 1 (or a list of them, one per hidden layer)'),
    ('19_experiment_unknown', ['experiment=nosuch', 'trainer.max_epochs=3'],
     "experiment=nosuch is not an option of 'experiment'; choose one of: arpit_cifar10_cnn, arpit_convergence_digits, arpit_convergence_mnist, arpit_easy_hard_digits, arpit_easy_hard_mnist, arpit_loss_sensitivity_digits"),
    ('30_metrics_every_0', ['metrics.every_n_epochs=0', 'trainer.max_epochs=3'],
     'metrics.every_n_epochs=0 must be an integer >= 1'),
    ('31_metrics_probe_size_neg', ['metrics.probe_size=-5', 'trainer.max_epochs=3'],
     'metrics.probe_size=-5 must be >= 1 or null (all training samples)'),
    ('32_metrics_masc_variance_1.5', ['metrics.masc.variance=1.5', 'trainer.max_epochs=3'],
     "metrics.masc.variance=1.5 is outside (0, 1]; it is the fraction of each class's variance its kept principal components explain (the paper uses 0.99)"),
    ('33_metrics_csr_n_neg', ['metrics.csr.n=-1', 'trainer.max_epochs=3'],
     'metrics.csr.n=-1 must be >= 1'),
    ('34_metrics_masc_layers_unknown', ['metrics.masc.layers=[nosuch]', 'trainer.max_epochs=3'],
     "metrics.masc.layers: 'nosuch' matches no probe layer of this model; its layers are input, fc1, fc2, fc3"),
    ('35_stop_at_train_acc_2', ['stop_at_train_acc=2', 'trainer.max_epochs=3'],
     'stop_at_train_acc=2 must be a number in [0, 1] or null (null trains for trainer.max_epochs)'),
    ('36_seed_neg', ['seed=-1', 'trainer.max_epochs=3'],
     'seed=-1 must be an integer >= 0 or null'),
    ('37_wandb_online_no_network', ['logger.wandb.mode=online', 'trainer.max_epochs=3'],
     'logger.wandb.mode=online but no W&B API key is set here: run `wandb login` (or set WANDB_API_KEY), or use logger.wandb.mode=offline and `wandb sync` later'),
    ('41_noise_random_labels_with_p', ['noise=random_labels', 'noise.p=0.3', 'trainer.max_epochs=3'],
     'noise=random_labels is defined with p=1.0, got noise.p=0.3; drop the noise.p override (or use noise=label_uniform for a fraction)'),
    ('43_trainer_gpu_no_gpu', ['trainer=gpu', 'trainer.max_epochs=3'],
     'trainer.accelerator=gpu but no GPU is visible; use trainer=default (auto) or trainer=cpu'),
    ('44_loss_unknown', ['module.loss=hinge', 'trainer.max_epochs=3'],
     "module.loss='hinge' is not one of ce, mse"),
    ('46_optim_forced_unknown_key', ['+optim.foo=1', 'trainer.max_epochs=3'],
     "optim: torch.optim.Adam refused its arguments (Adam.__init__() got an unexpected keyword argument 'foo'); set optim.foo=null (or ~optim.foo) for torch.optim.Adam"),
    ('47_noise_seed_float', ['noise.seed=1.5', 'trainer.max_epochs=3'],
     'noise.seed=1.5 must be an integer'),
    ('48_metrics_masc_method_foo', ['metrics.masc.method=foo', 'trainer.max_epochs=3'],
     "metrics.masc.method='foo' must be auto, gram or samples"),
    ('N01_replicas_0', ['trainer.replicas=0', 'trainer.max_epochs=3'],
     'trainer.replicas=0 must be an integer >= 1 (how many seeds one job trains at once)'),
    ('N02_replicas_neg1', ['trainer.replicas=-1', 'trainer.max_epochs=3'],
     'trainer.replicas=-1 must be an integer >= 1 (how many seeds one job trains at once)'),
    ('N03_replicas_abc', ['trainer.replicas=abc', 'trainer.max_epochs=3'],
     'trainer.replicas=abc must be an integer >= 1 (how many seeds one job trains at once)'),
    ('N04_replicas_vary_nosuch', ['trainer.replicas=2', 'replicas.vary=[nosuch]', 'trainer.max_epochs=3'],
     "replicas.vary=['nosuch']: nosuch cannot vary between replicas; choose among seed, noise.seed, data.shuffle_seed, data.train_seed, data.val_seed"),
    ('N05_replicas_mlp_dropout', ['trainer.replicas=2', 'model.dropout=0.5', 'trainer.max_epochs=3'],
     'trainer.replicas=2: model.dropout=0.5 draws random numbers in training that a stacked job cannot draw as each single run would; set it to 0 or trainer.replicas=1'),
    ('N06_replicas_cnn_batchnorm_vmap', ['trainer.replicas=2', 'replicas.mode=vmap', 'data=synthetic', 'model=cnn', 'model.batchnorm=true', 'trainer.max_epochs=3'],
     'model.in_shape=[1, 4, 4]: the cnn needs images of at least 8x8'),
    ('N06b_replicas_cnn_batchnorm_vmap_digits', ['trainer.replicas=2', 'replicas.mode=vmap', 'model=cnn', 'model.batchnorm=true', 'trainer.max_epochs=3'],
     'trainer.replicas=2: batch norm is not stacked (its running statistics are per network and per batch); set model.batchnorm=false or trainer.replicas=1'),
    ('N06c_replicas_cnn_batchnorm_loop_digits', ['trainer.replicas=2', 'replicas.mode=loop', 'model=cnn', 'model.batchnorm=true', 'trainer.max_epochs=3'],
     'trainer.replicas=2: batch norm is not stacked (its running statistics are per network and per batch); set model.batchnorm=false or trainer.replicas=1'),
    ('N07_replicas_mode_foo', ['trainer.replicas=2', 'replicas.mode=foo', 'trainer.max_epochs=3'],
     "replicas.mode='foo' is not one of auto, loop, vmap"),
    ('N08_replicas_vary_string', ['trainer.replicas=2', 'replicas.vary=seed', 'trainer.max_epochs=3'],
     'replicas.vary=seed must be a list: replicas.vary=[seed]'),
    ('N09_replicas_1.5', ['trainer.replicas=1.5', 'trainer.max_epochs=3'],
     'trainer.replicas=1.5 must be an integer >= 1 (how many seeds one job trains at once)'),
    ('N10_relabel_val_fraction_1', ['relabel.enabled=true', 'relabel.val_fraction=1', 'trainer.max_epochs=3'],
     'relabel.val_fraction=1 must be strictly between 0 and 1: both parts of the test set need samples'),
    ('N11_relabel_monitor_foo', ['relabel.enabled=true', 'relabel.monitor=foo', 'trainer.max_epochs=3'],
     "relabel.monitor='foo' must be one of acc, loss"),
    ('N12_relabel_layers_nosuch', ['relabel.enabled=true', 'relabel.layers=[nosuch]', 'relabel.max_epochs=2', 'trainer.max_epochs=3'],
     "relabel.layers: 'nosuch' matches no probe layer of this model; its layers are input, fc1, fc2, fc3"),
    ('N13_relabel_max_epochs_0', ['relabel.enabled=true', 'relabel.max_epochs=0', 'trainer.max_epochs=3'],
     'relabel.max_epochs=0 must be an integer >= 1 (the MASC paper: 30)'),
    ('N14_relabel_enabled_maybe', ['relabel.enabled=maybe', 'trainer.max_epochs=3'],
     'relabel.enabled=maybe must be true or false'),
    ('N15_relabel_typo_key', ['relabel.enable=true', 'trainer.max_epochs=3'],
     'relabel.enable is not a key of relabel: check the spelling (its keys: python -m memorization.run --cfg job --package relabel)'),
    ('N17_relabel_with_replicas', ['relabel.enabled=true', 'relabel.max_epochs=2', 'trainer.replicas=2', 'trainer.max_epochs=3'],
     'trainer.replicas=2: the relabel stage runs on one network; set relabel.enabled=false or trainer.replicas=1'),
    ('N47_replicas_input_dropout', ['trainer.replicas=2', 'model.input_dropout=0.3', 'trainer.max_epochs=3'],
     'trainer.replicas=2: model.input_dropout=0.3 draws random numbers in training that a stacked job cannot draw as each single run would; set it to 0 or trainer.replicas=1'),
    ('H14_noise_p_nan', ['noise.p=nan', 'trainer.max_epochs=3'],
     'noise.p=nan must be a number in [0, 1]: the probability that a training sample is corrupted'),
    ('D03_divergence_max_ratio_bad', ['callbacks.divergence.max_ratio=0.5', 'trainer.max_epochs=3'],
     'callbacks.divergence.max_ratio=0.5 must be a number >= 1 or null (null: only a NaN or infinite loss stops the job)'),
]
# the studies' and the scores job's: (case, command, overrides, the error line)
STUDIES = [
    ('N18_sens_steps_neg', 'sensitivity', ['sensitivity.steps=-5', 'logger=none'],
     'sensitivity.steps=-5 must be an integer >= 1'),
    ('N19_sens_unknown_key', 'sensitivity', ['sensitivity.foo=1', 'logger=none'],
     'sensitivity.foo is not a key of sensitivity: check the spelling (its keys: python -m memorization.sensitivity --cfg job --package sensitivity)'),
    ('N20_sens_method_foo', 'sensitivity', ['sensitivity.method=foo', 'logger=none'],
     'sensitivity.method=foo must be one of unrolled, input_grad_norm'),
    ('N21_sens_every_0', 'sensitivity', ['sensitivity.every=0', 'sensitivity.steps=20', 'logger=none'],
     'sensitivity.every=0 must be an integer >= 1'),
    ('N23_sens_batch_size_0', 'sensitivity', ['sensitivity.batch_size=0', 'logger=none'],
     'sensitivity.batch_size=0 must be an integer >= 1'),
    ('N24_eh_n_seeds_neg', 'easy_hard', ['easy_hard.n_seeds=-3', 'logger=none'],
     'easy_hard.n_seeds=-3 must be an integer >= 1'),
    ('N25_eh_n_seeds_0', 'easy_hard', ['easy_hard.n_seeds=0', 'logger=none'],
     'easy_hard.n_seeds=0 must be an integer >= 1'),
    ('N26_eh_unknown_key', 'easy_hard', ['easy_hard.foo=1', 'logger=none'],
     'easy_hard.foo is not a key of easy_hard: check the spelling (its keys: python -m memorization.easy_hard --cfg job --package easy_hard)'),
    ('N27_eh_split_foo', 'easy_hard', ['easy_hard.split=foo', 'easy_hard.n_seeds=2', 'logger=none'],
     'easy_hard.split=foo must be one of train, test'),
    ('N28_eh_epochs_neg', 'easy_hard', ['easy_hard.epochs=-1', 'easy_hard.n_seeds=2', 'logger=none'],
     'easy_hard.epochs=-1 must be an integer >= 1'),
    ('S01_scores_unknown_key', 'scores', ['scores.foo=1', 'logger=none'],
     'scores.foo is not a key of scores: check the spelling (its keys: python -m memorization.scores --cfg job --package scores)'),
    ('S02_scores_ratio_0', 'scores', ['scores.ratios=[0]', 'logger=none'],
     'scores.ratios=[0.0]: 0 is not in (0, 1); a model trains on that fraction of the training examples'),
    ('S03_scores_ratio_1.5', 'scores', ['scores.ratios=[1.5]', 'logger=none'],
     'scores.ratios=[1.5]: 1.5 is not in (0, 1); a model trains on that fraction of the training examples'),
    ('S04_scores_ratio_1', 'scores', ['scores.ratios=[1.0]', 'logger=none'],
     'scores.ratios=[1.0]: 1 is not in (0, 1); a model trains on that fraction of the training examples'),
    ('S05_scores_models_0', 'scores', ['scores.models=0', 'logger=none'],
     'scores.models=0 must be an integer >= 1 (models trained at each subset ratio)'),
    ('S06_scores_epochs_neg', 'scores', ['scores.epochs=-1', 'logger=none'],
     'scores.epochs=-1 must be an integer >= 1'),
    ('S07_scores_mode_foo', 'scores', ['scores.mode=foo', 'logger=none'],
     'scores.mode=foo must be one of auto, loop, vmap'),
    ('S09_scores_precision_foo', 'scores', ['scores.precision=foo', 'logger=none'],
     'scores.precision=foo is not one of 32-true, 32, bf16-mixed, 16-mixed (the weights stay float32; bf16-mixed is the fast one)'),
    ('S10_scores_mem_ratio_not_listed', 'scores', ['scores.ratios=[0.5,0.7]', 'scores.mem_ratio=0.6', 'logger=none'],
     'scores.mem_ratio=0.6 is not one of scores.ratios=[0.5, 0.7]; pick one of them (null: the first)'),
    ('S11_scores_ratios_scalar', 'scores', ['scores.ratios=0.7', 'logger=none'],
     'scores.ratios=0.7 must be a list: scores.ratios=[0.7]'),
    ('S12_scores_replicas_0', 'scores', ['trainer.replicas=0', 'logger=none'],
     'trainer.replicas=0 must be an integer >= 1 (how many seeds one job trains at once)'),
    ('S13_scores_ratios_empty', 'scores', ['scores.ratios=[]', 'logger=none'],
     'scores.ratios=[] lists no subset ratio; give at least one, e.g. scores.ratios=[0.7]'),
    ('S14_scores_ratios_dup', 'scores', ['scores.ratios=[0.7,0.7]', 'logger=none'],
     'scores.ratios=[0.7, 0.7] lists a ratio twice; list each once'),
    ('S15_scores_matmul_foo', 'scores', ['scores.matmul_precision=foo', 'logger=none'],
     'scores.matmul_precision=foo is not one of highest, high, medium or null (high: TF32 on a GPU)'),
    ('S16_scores_top_neg', 'scores', ['scores.top=-1', 'logger=none'],
     'scores.top=-1 must be an integer >= 0 (how many of the most memorized examples the figure shows)'),
    ('S17_scores_ratio_abc', 'scores', ['scores.ratios=[abc]', 'logger=none'],
     'scores.ratios[0]=abc must be a number'),
]
AT_JOB_START = [
    ('42_val_size_too_big', ['data.val_size=2000', 'trainer.max_epochs=3'],
     'data.val_size=2000.0 leaves no training samples out of 1438; use a count below that or a fraction in (0, 1)'),
    ('45_data_shape_wrong', ['data.shape=[1,28,28]', 'trainer.max_epochs=3'],
     'data.source=digits gives inputs [1, 8, 8] with 10 classes, but the config declares data.shape=[1, 28, 28] and data.num_classes=10; fix the data config'),
    ('H10_train_size_huge', ['data.train_size=100000', 'trainer.max_epochs=3'],
     'data.train_size=100000 is more than the 1438 training samples there are; use a count up to that or a fraction'),
]


@pytest.mark.parametrize("case, args, line", BEFORE_START, ids=[c for c, _, _ in BEFORE_START])
def test_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch, case, args, line):
    if "trainer=gpu" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the config's mode decides (nothing runs)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    err, _ = precheck([*args, f"hydra.run.dir={tmp_path / 'run'}"], "config", validate)
    assert err is not None and "\n" not in err, err
    assert err.startswith(line), err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case, args, line", AT_JOB_START, ids=[c for c, _, _ in AT_JOB_START])
def test_refused_in_one_line_when_the_job_starts(tmp_path, case, args, line):
    res = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {line}"), res.stderr[-2000:]


@pytest.mark.parametrize("case, name, args, line", STUDIES, ids=[c for c, *_ in STUDIES])
def test_a_studys_bad_value_is_refused_in_one_line(tmp_path, case, name, args, line):
    from memorization.studies.common import validate_study
    from memorization.studies.scores.job import validate as scores_validate

    check = scores_validate if name == "scores" else (lambda cfg: validate_study(cfg, name))
    err, _ = precheck([*args, f"hydra.run.dir={tmp_path / 'run'}"], name, check)
    assert err is not None and "\n" not in err, err
    # the hint names the command this process runs: here pytest's, so memorization.run
    head = line.split("(its keys: python -m memorization.")[0]
    assert err.startswith(head), err
    assert not (tmp_path / "run").exists()
