"""Adapters that make ssd_fast the SSD backend of other tools, each imported on demand.

- `ssd_fast.integrations.supreme`: SUPREME's SSD family (ssd, lfssd, ssd_det,
  lfssd_det, assd) registered through SUPREME's own registry, with one call.

Lightning Fabric and Lightning need no adapter: `importance`, `dampen`, `prepare`, `tune`
and `Importances.load(model=...)` accept a Fabric-wrapped model directly (see
ssd_fast.distributed._unwrap).
"""
