"""Web UI routes."""

from django.urls import path

from chat import views

urlpatterns = [
    path("", views.thread_list, name="thread-list"),
]
