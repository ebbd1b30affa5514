"""Everything around the SNMN model: data, features, training, tracking, evaluation, reports."""
