"""Importers that turn public datasets into the shop data contract, with honest row accounting.

* ``import_online_retail``: the UCI Online Retail file (one row per invoice line).
* ``import_complete_journey``: the 84.51 / dunnhumby Complete Journey tables.
* ``import_hillstrom``: the MineThatData e-mail test (Hillstrom 2008), a randomised campaign with a control
  arm.

Each returns an :class:`ImportReport` of what was kept, dropped (and why) and turned into returns.
"""

from features.importers.complete_journey import import_complete_journey
from features.importers.hillstrom import (
    HILLSTROM_ARMS,
    HILLSTROM_ATTRIBUTES,
    HILLSTROM_CAMPAIGN,
    HILLSTROM_COLUMNS,
    HILLSTROM_PRODUCT,
    import_hillstrom,
)
from features.importers.online_retail import (
    NON_PRODUCT_CODES,
    NON_PRODUCT_PREFIXES,
    import_online_retail,
    is_non_product,
)
from features.importers.report import ImportReport

__all__ = ["HILLSTROM_ARMS", "HILLSTROM_ATTRIBUTES", "HILLSTROM_CAMPAIGN", "HILLSTROM_COLUMNS",
           "HILLSTROM_PRODUCT", "NON_PRODUCT_CODES", "NON_PRODUCT_PREFIXES", "ImportReport",
           "import_complete_journey", "import_hillstrom", "import_online_retail", "is_non_product"]
