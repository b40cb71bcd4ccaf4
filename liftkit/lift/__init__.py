"""The LIFT paper (Weinstein et al., arXiv:2512.15984) in code.

Modules, in the order the book meets them:

- :mod:`~liftkit.lift.theory`: Section 5 (the reduction to compressed sensing, coherence).
- :mod:`~liftkit.lift.toy`: a finite-library pooled screen (standard compressed sensing, eq. 12).
- :mod:`~liftkit.lift.library`: the sequence library p(x) (OLGA and a fitted synthesis model).
- :mod:`~liftkit.lift.oracle`: the motif oracle of App. C.
- :mod:`~liftkit.lift.screen`: a sorted pooled screen, stored as CSR.
- :mod:`~liftkit.lift.nets`: the sequence CNN f_theta.
- :mod:`~liftkit.lift.objectives`: the training objectives, LIFT's pooled likelihood with its
  LeaVS and L1 terms and the conventional pair likelihood (eqs. 6, 7, 36).
- :mod:`~liftkit.lift.train`: one training loop over an objective; ``fit_lift``, ``fit_conventional``.
- :mod:`~liftkit.lift.experiment`: test sets, evaluation and the MOI experiment (Figure 2).
- :mod:`~liftkit.lift.splits`: laboratory-style splits (App. E).
"""
