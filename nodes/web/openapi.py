"""The OpenAPI 3.1 description of the node's API (served at ``/api/v1/openapi.json``).

Written by hand beside the handlers it describes (``nodes/web/api.py``): the operation
objects are §9's, validated by the node's rules, so the schema states their shape and leaves
the rules to the node. A test validates it with openapi-spec-validator.
"""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _PROBLEM}}}  # fmt: skip


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "certificate_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}}
_Q = {
    "name": "q",
    "in": "query",
    "schema": {"type": "string", "maxLength": 100},
    "description": "search: part of a certificate id, a country code or a registry state",
}
_ERRORS = {"401": _problem("no or unknown token"), "403": _problem("the role may not")}

_OPERATION = {
    "type": "object",
    "required": ["op"],
    "description": "A DESIGN §9 operation: issue, void, confirm_import or declare_production. "
    "Unknown fields are refused with their path.",
    "properties": {
        "op": {"enum": ["issue", "void", "confirm_import", "declare_production"]},
        "request_id": {"type": "string", "minLength": 1, "maxLength": 100,
                       "description": "idempotency key, unique per member"},
        "certificate": {"type": "object", "description": "for issue: the certificate"},
        "certificate_id": {"type": "string"},
        "reason": {"type": "string"},
        "replaced_by": {"type": "string"},
        "issuing_participant": {"type": "string"},
        "received_on": {"type": "string", "format": "date"},
        "parcels": {"type": "integer"},
        "carats": {"type": ["string", "number"]},
        "value_usd": {"type": ["string", "number"]},
        "seal_intact": {"type": "boolean"},
        "remarks": {"type": "string"},
        "period": {"type": "string", "pattern": "^[0-9]{4}-H[12]$"},
        "producer": {"type": "string"},
    },
}  # fmt: skip

_RESULT = {
    "type": "object",
    "required": ["line", "status", "certificate_id", "reason", "sentence"],
    "properties": {
        "line": {"type": "integer", "minimum": 1},
        "status": {"enum": ["ok", "refused"]},
        "certificate_id": {"type": ["string", "null"]},
        "subject": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"], "description": "DESIGN §7 reason code"},
        "sentence": {"type": ["string", "null"]},
        "already_applied": {"type": "boolean"},
    },
}

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def _paths() -> dict[str, Any]:
    """The paths object, a declarative table longer than 40 lines because, split up, it would
    no longer read as the API it describes, one path after the other."""
    return {
        "/api/v1/operations": {"post": {
            "summary": "Apply operations (as kpx node submit), request_id honoured",
            "operationId": "applyOperations",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "array", "minItems": 1, "maxItems": 1000, "items": _OPERATION}}}},
            "responses": {
                "200": _json({"type": "object", "required": ["results"], "properties": {
                    "results": {"type": "array", "items": _RESULT}}}, "one result per operation"),
                "400": _problem("not a JSON array"), "413": _problem("body too large"),
                "415": _problem("not application/json"), **_ERRORS,
            },
        }},
        "/api/v1/certificates": {"get": {
            "summary": "This node's certificates with the registry's answer, newest first",
            "operationId": "listCertificates", "parameters": [_Q, _PAGE],
            "responses": {"200": _json({"type": "object"}, "a page of 50"), **_ERRORS},
        }},
        "/api/v1/certificates/{certificate_id}": {"get": {
            "summary": "One certificate, its registry state and its audit trail",
            "operationId": "getCertificate", "parameters": [_ID],
            "responses": {"200": _json({"type": "object"}, "the certificate"),
                          "404": _problem("unknown here"), **_ERRORS},
        }},
        "/api/v1/certificates/{certificate_id}/pdf": {"get": {
            "summary": "The printable certificate (A4, Annex I elements, QR code)",
            "operationId": "getCertificatePdf", "parameters": [_ID],
            "responses": {"200": {"description": "the PDF", "content": {
                "application/pdf": {"schema": {"type": "string", "contentMediaType":
                                               "application/pdf"}}}},
                          "404": _problem("unknown here"), **_ERRORS},
        }},
        "/api/v1/shipments/expected": {"get": {
            "summary": "Shipments announced to this participant and not yet confirmed",
            "operationId": "expectedShipments", "parameters": [_Q, _PAGE],
            "responses": {"200": _json({"type": "object"}, "a page of 50"), **_ERRORS},
        }},
        "/api/v1/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
        }},
    }  # fmt: skip


def document(member: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of member ``member``'s node."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"kpx national node {member}",
            "version": "1",
            "description": "Operations and reads of a KP national authority's node.",
        },
        "paths": _paths(),
        "components": {
            "schemas": {"Problem": _PROBLEM_SCHEMA, "Operation": _OPERATION, "Result": _RESULT},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
