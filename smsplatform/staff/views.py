"""The shell's pages: login, logout and the home page listing what the user may open."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from smsplatform.staff.base import staff_view
from smsplatform.staff.registry import staff_navigation


class StaffLoginView(LoginView):
    template_name = "staff/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return "/app/"


class StaffLogoutView(LogoutView):
    next_page = "/app/login/"


@staff_view()
def home(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"pages": staff_navigation(request.user)}
    return render(request, "staff/home.html", context)
