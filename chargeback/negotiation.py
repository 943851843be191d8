"""Content negotiation: DRF's, except that a `?format=` no renderer of the view has is an invalid
parameter (400 `validation_error`), not the 404 DRF answers as if the URL did not exist."""

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = sorted({renderer.format for renderer in renderers if renderer.format != "api"})
            raise ValidationError(
                {"format": [f"Unknown format {format!r}; this endpoint answers {', '.join(known)}."]}
            )
        return matching
