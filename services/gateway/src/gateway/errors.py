"""The gateway's own error codes (added to the chassis catalogue on import; never renamed or reused)."""

from __future__ import annotations

from registry_common.errors import register_errors

register_errors(
    {
        "gateway.upstream_unavailable": (
            503, "El servicio {service} no está disponible temporalmente.",
            "The {service} service is temporarily unavailable."),
        "gateway.upstream_timeout": (
            504, "El servicio {service} no respondió a tiempo.",
            "The {service} service did not answer in time."),
        "gateway.upstream_error": (
            502, "El servicio {service} respondió de forma inválida.",
            "The {service} service gave an invalid answer."),
        "gateway.payload_too_large": (
            413, "El cuerpo de la solicitud excede el máximo de {limit} bytes.",
            "The request body exceeds the maximum of {limit} bytes."),
    }
)
