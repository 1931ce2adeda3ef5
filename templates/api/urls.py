from django.urls import path

from templates.api.views import (
    CopyFitPreviewApi,
    ShortLinkCreateApi,
    ShortLinkPreviewApi,
    TemplateDetailApi,
    TemplatesApi,
)

urlpatterns = [
    path("templates/", TemplatesApi.as_view(), name="templates"),
    path("templates/<int:template_id>/", TemplateDetailApi.as_view(), name="template"),
    path("copy/fit-preview/", CopyFitPreviewApi.as_view(), name="copy-fit-preview"),
    path("short-links/preview/", ShortLinkPreviewApi.as_view(), name="short-links-preview"),
    path("short-links/", ShortLinkCreateApi.as_view(), name="short-links"),
]
