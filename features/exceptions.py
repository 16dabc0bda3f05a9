"""Domain errors. Each message says what went wrong and what to do about it."""

from __future__ import annotations


class PersonaliseError(Exception):
    """Base class of every error this project raises on purpose."""


class DataValidationError(PersonaliseError):
    """The shop data breaks the contract; nothing was fitted or registered.

    ``report`` holds every problem found (table, column, number of bad rows, examples).
    """

    def __init__(self, report: object) -> None:
        self.report = report
        super().__init__(str(report))


class NotFittedError(PersonaliseError):
    """A model was used before ``fit``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not fitted yet: call fit(...) first")


class UnknownCustomerError(PersonaliseError, KeyError):
    """A customer id the model has never seen, where no fallback applies."""


class CatalogueError(PersonaliseError):
    """The offer catalogue (offers.yaml) is invalid. The message names the offer id and the reason."""


class ModelFitError(PersonaliseError):
    """Fitting produced an unusable model (NaN factors, no training rows, ...)."""


class ModelNotAvailableError(PersonaliseError):
    """No promoted model could be found or loaded."""
