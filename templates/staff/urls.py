from django.urls import path

from templates.staff import views

urlpatterns = [
    path("", views.template_list, name="list"),
    path("new/", views.edit, name="new"),
    path("fit/", views.fit_part, name="fit"),
    path("<int:template_id>/", views.edit, name="edit"),
    path("<int:template_id>/diff/", views.diff, name="diff"),
]
