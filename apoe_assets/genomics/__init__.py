"""Pure genomics core: coordinates, contig names, FASTA, VCF, annotation. No Dagster here."""
