from django.urls import path

from contacts.api.views import (
    AudienceListApi,
    ContactDetailApi,
    ContactImportApi,
    ContactListApi,
    CustomerFactIngestApi,
    FrequencyCapsApi,
    OptOutListApi,
    SegmentListApi,
    SegmentPreviewApi,
)

urlpatterns = [
    path("contacts/", ContactListApi.as_view(), name="contacts"),
    path("contacts/import/", ContactImportApi.as_view(), name="contacts-import"),
    path("contacts/<int:contact_id>/", ContactDetailApi.as_view(), name="contact"),
    path("opt-outs/", OptOutListApi.as_view(), name="opt-outs"),
    path("frequency-caps/", FrequencyCapsApi.as_view(), name="frequency-caps"),
    path("audiences/", AudienceListApi.as_view(), name="audiences"),
    path("segments/preview/", SegmentPreviewApi.as_view(), name="segments-preview"),
    path("segments/", SegmentListApi.as_view(), name="segments"),
    path("customer-facts/", CustomerFactIngestApi.as_view(), name="customer-facts"),
]
