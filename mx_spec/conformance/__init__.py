"""The conformance kit: golden vectors of the MX numbers (schema, inputs, generator, flat exports)
and the verifier of another implementation against them (comparison, results files, report, hints,
the ``mx-spec`` console script). Built on :mod:`mx_spec`; the numbers never import it."""
