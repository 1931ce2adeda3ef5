from django.urls import path

from contacts.staff import views

urlpatterns = [
    path("", views.search, name="search"),
    path("new/", views.upsert, name="new"),
    path("import/", views.import_csv, name="import"),
    path("<int:contact_id>/", views.detail, name="detail"),
    path("<int:contact_id>/edit/", views.upsert, name="edit"),
    path("<int:contact_id>/opt-out/", views.opt_out, name="opt-out"),
]
