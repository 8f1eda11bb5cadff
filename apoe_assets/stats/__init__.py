"""Pure statistical genetics core: residualisation, cis-eQTL, LD clumping, PRS. No Dagster here."""
