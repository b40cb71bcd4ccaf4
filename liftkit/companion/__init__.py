"""The book machinery: chapter profiles, the papermill runner, goldens, the build and the CLI.

Nothing here is science; the chapters call :mod:`liftkit.lift` and :mod:`liftkit.perturb` for
that. :mod:`~liftkit.companion.profiles` resolves a chapter's parameters,
:mod:`~liftkit.companion.runner` executes a chapter with papermill,
:mod:`~liftkit.companion.goldens` rewrites the golden notebooks, :mod:`~liftkit.companion.build`
builds the book strictly and :mod:`~liftkit.companion.cli` is the ``liftkit`` command.
"""
