"""MASC relabel-and-retrain: a stage of a job, after its fit (``relabel.enabled=true``).

The MASC paper (*Decoding Generalization from Memorization in Deep Neural Networks*, Sec. 3.3
and Sec. 6, Fig. 4, Supplementary Tables 6-8) uses the layerwise MASC classifiers of a network
trained on corrupted labels to relabel its training set, and retrains the network on the new
labels:

1. split the test set 80%-20%;
2. fit MASC at every layer on the training set with its corrupted labels; the *best layer* is
   the one whose MASC is most accurate on the 20% part;
3. relabel the training set with that layer's MASC predictions;
4. retrain the existing network on the relabeled set "for up to 30 epochs and perform early
   stopping with patience of 3 by considering the 20% test dataset as a validation dataset";
5. the same with subspaces of the true training labels (a control the paper reports beside it);
6. report the model's test accuracy before and after retraining, and MASC's at the best layer,
   on the 80% part; and the fraction of wrong training labels before and after relabeling, with
   the labels fixed (wrong before, right after) and newly broken (right before, wrong after).

Our readings, where the paper is silent:

- **Fit set**: the whole training set (every sample is relabeled, so every sample's layer outputs
  are computed anyway), not the metrics' probe subset, by the metrics' routes: float32 Gram
  matrices with MASC's float64 refit of unsettled classes, or the exact sample-space fit when
  classes have fewer samples than the layer has units (``masc_layers.py``). Every probe layer
  by default, the input included (the paper probes all MLP layers; ``relabel.layers`` picks
  some, e.g. for CNNs).
- **Split**: a permutation of the test set from ``relabel.split_seed`` alone; the held-out part
  has ``round(0.2 * n)`` samples. Everything called ``test`` in the stage's results is the 80%
  part; ``val`` is the 20% part.
- **Best layer**: most correct predictions on the 20% part; on a tie, the shallowest layer.
- **Zero vectors**: MASC has no angle for a zero layer output (every ReLU off) and predicts -1;
  such a sample keeps its training label (``n_zero`` counts them).
- **Retraining** (``retrain.py``): from a copy of the trained weights, each labelling from the
  same ones, with a fresh optimizer (and schedule) of the job's settings (the paper gives no
  others), the job's batch size and loss, in a seeded batch order; no data augmentation or
  adversarial training (the MASC paper uses neither). Early stopping monitors accuracy on the
  20% part by default (``relabel.monitor=loss``: its loss), counts only strict improvements,
  stops after ``patience`` epochs without one, and restores the best epoch's weights.
- **Random-initialization control** (the paper's supplementary, not available here): MASC per
  layer of the untrained network, fitted and scored as above: the job's network as it was built
  before training (the same seed, hence the same initial weights; with ``seed=null`` a job whose
  stage is rerun in a later attempt gets another draw).

Results (metrics.json's ``relabel`` node, flattened to ``relabel/...`` keys for the loggers and
the sweep report): ``model/test_acc_before``; per labelling (``masc``: training labels,
``masc_true``: true labels) ``best_layer`` and ``best_layer_index`` (its depth, 0 the input),
``masc_val_acc``, ``masc_test_acc``, ``test_acc_after``, ``wrong_before``, ``wrong_after``,
``fixed``, ``broken`` (fractions of the training set; ``n_*`` the counts),
``best_epoch``, ``epochs``, ``curve`` (per retraining epoch), ``layer_*_acc`` per layer; and
``init/<labelling>/{test,train,train_true}/<layer>``, the control's MASC accuracies.

Layer: jobs; imports the engine (its ``fit_network``), the parts and base/ (its node:
memorization/config/relabel.py).
"""

from memorization.config.relabel import RelabelConfig

__all__ = ["RelabelConfig"]
