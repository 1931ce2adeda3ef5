from django.urls import path

from reporting.staff import views

urlpatterns = [
    path("", views.inbox, name="list"),
    path("read/", views.inbox_read, name="read"),
]
