"""The spec: read the YAML, interpolate it, validate it against ``spec.schema.json``, and build
the frozen, typed objects every other part works from.

- ``model``: the frozen dataclasses (``Spec``, ``DatasetSpec``, ``Field`` ...) and value parsers;
- ``load``: reading the file, interpolation, validation, the entry point ``load_spec``;
- ``document``: the parsed YAML with the line of every key, for located messages;
- ``build``: from validated data to ``Spec``, with the checks a JSON Schema cannot express;
- ``verdict``: a quick yes/no from the schema, so a valid spec never imports jsonschema;
- ``columns``: matching the names a spec uses to the columns a query returns.
"""
