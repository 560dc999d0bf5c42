"""URLs for the benchmark peer (helpdesk builds ticket links with reverse())."""

from django.urls import include, path

urlpatterns = [path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]
