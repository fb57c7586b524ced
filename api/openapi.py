"""OpenAPI 3.1 description of the two operations, their headers and every error."""

from typing import Any

from aggregates.values import MAX_LABEL_LENGTH
from commands.operations import OPERATIONS, Operation

JSONAPI = "application/vnd.api+json"

ERRORS = {
    "401": (
        "token_invalid",
        "The token is missing, invalid, revoked or rotated. Tell engineering.",
    ),
    "403": (
        "forbidden | blocked",
        "The token lacks permission, or the request was blocked. Tell engineering.",
    ),
    "404": ("person_not_found | community_not_found", "No matching person or community."),
    "409": ("email_ambiguous", "Two different people share the email sent: send personId instead."),
    "413": ("body_too_large", "The body is larger than 16 KiB."),
    "415": ("unsupported_media_type", "Content-Type must be application/json."),
    "422": (
        "invalid_field | missing_field | malformed_json | wrong_type | idempotency_key_reused",
        "A field is missing or has a bad value; read the detail.",
    ),
    "429": ("rate_limited", "Too many requests this minute; see Retry-After."),
    "503": ("unavailable", "The store is unreachable; retry with the same key."),
}


def _header(
    name: str, description: str, required: bool = False, max_length: int = 255
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string", "maxLength": max_length},
    }


PARAMETERS = [
    _header(
        "X-CIO-Idempotency-Key",
        "Idempotency key; Customer.io: {{ event.delivery_id }}. Empty counts as absent.",
    ),
    _header("Idempotency-Key", "Alternative idempotency key header (IETF draft), quoted or bare."),
    _header("X-CIO-Delivery-Id", "Used as the idempotency key when neither header above is sent."),
    _header(
        "X-Ops-Workflow",
        "The originating workflow, recorded in the audit trail (at most 200 characters).",
        max_length=MAX_LABEL_LENGTH,
    ),
    _header(
        "X-CIO-Signature",
        "Hex HMAC-SHA256 of v0:<X-CIO-Timestamp>:<body>, for tokens with a signing key.",
    ),
    _header("X-CIO-Timestamp", "Timestamp signed in X-CIO-Signature."),
]

PERSON = {
    "personId": {
        "type": "integer",
        "minimum": 1,
        "description": "Play Money ID (a number, no quotes).",
    },
    "email": {
        "type": "string",
        "description": "Instead of personId; matched trimmed and case-insensitively.",
    },
}


def _body(
    type_: str, attributes: dict[str, Any], required: list[str], *, request: bool
) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["type", "attributes"],
                "properties": {
                    "type": {"const": type_},
                    "id": {"type": "string"},
                    "attributes": {
                        "type": "object",
                        "properties": attributes,
                        "required": required,
                        "additionalProperties": False,
                        # the person: by personId or by email, never both
                        **({"oneOf": PERSON_ONE_OF} if request else {}),
                    },
                },
            },
            "meta": {
                "type": "object",
                "properties": {"workflow": {"type": "string", "maxLength": MAX_LABEL_LENGTH}},
            },
        },
    }


PERSON_ONE_OF = [{"required": ["personId"]}, {"required": ["email"]}]


def _responses(operation: Operation) -> dict[str, Any]:
    response = _body(
        operation.resource_type, operation.response, list(operation.response), request=False
    )
    responses: dict[str, Any] = {
        "200": {
            "description": "Success, including a no-op repeat. A replay carries Idempotent-Replayed: true.",
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "const": "true"}}},
            "content": {"application/vnd.api+json": {"schema": response}},
        }
    }
    for status, (codes, description) in ERRORS.items():
        responses[status] = {
            "description": f"{description} (code: {codes})",
            "content": {
                "application/vnd.api+json": {"schema": {"$ref": "#/components/schemas/Errors"}}
            },
        }
    responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    responses["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return responses


def _operation(operation: Operation) -> dict[str, Any]:
    attributes = {**PERSON, operation.field.name: operation.field.schema}
    request = _body(operation.resource_type, attributes, [operation.field.name], request=True)
    return {
        "post": {
            "summary": operation.summary,
            "operationId": operation.name,
            "security": [{"bearer": []}],
            "parameters": PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}, JSONAPI: {"schema": request}},
            },
            "responses": _responses(operation),
        }
    }


def openapi_document(public_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pm-ops",
            "version": "1.0.0",
            "description": "; ".join(op.summary for op in OPERATIONS) + ".",
        },
        "servers": [{"url": public_url}],
        "paths": {op.path: _operation(op) for op in OPERATIONS},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["status", "code", "title", "detail"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "code": {"type": "string"},
                                    "title": {"type": "string"},
                                    "detail": {"type": "string"},
                                    "source": {
                                        "type": "object",
                                        "properties": {
                                            "pointer": {"type": "string"},
                                            "header": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        }
                    },
                }
            },
        },
    }
