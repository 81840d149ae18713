"""The API contract, written once: request/response models, problem types, the OpenAPI spec.

No Flask here: ``models`` validates what callers send (the domain functions delegate to it),
``problems`` is the one registry of problem types (the error handlers and the spec use it),
``components``, ``paths`` and ``spec`` assemble /openapi.json with the schemas generated from
the models.
"""
