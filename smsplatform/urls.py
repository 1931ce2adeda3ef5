from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from gateways import views as gateway_views
from smsplatform.mcp.views import McpEndpointView
from smsplatform.operations.metrics import metrics_view
from smsplatform.operations.views import healthz, readyz
from templates.views import short_link_redirect

admin.site.site_header = "SMS Marketing Platform"
admin.site.site_title = "SMS Marketing"
admin.site.index_title = "Operations, approvals and configuration"

urlpatterns = [
    # First: the hottest route (every click of every campaign) is matched before any other.
    re_path(r"^s/(?P<code>[^/]+)(?:/(?P<recipient>[^/]+))?/?$", short_link_redirect, name="short-link"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    # The staff web app; each app adds its section to smsplatform.staff.registry from its ready().
    path("app/", include("smsplatform.staff.urls", namespace="staff")),
    path("api/v1/", include(("smsplatform.api.urls", "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        # The split view serves its start-up script from a URL: no inline script for the CSP to allow.
        SpectacularSwaggerSplitView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
        name="redoc",
    ),
    path("mcp", McpEndpointView.as_view(), name="mcp"),
    path("hooks/<slug:gateway_code>/receipts", gateway_views.receipt_callback, name="gateway-receipts"),
    path("hooks/<slug:gateway_code>/inbound", gateway_views.inbound_callback, name="gateway-inbound"),
]

handler404 = "smsplatform.api.errors.handler404"
handler500 = "smsplatform.api.errors.handler500"
