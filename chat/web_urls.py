"""Web UI routes: pages, and the JSON the pages' scripts fetch."""

from django.urls import path

from chat import views

urlpatterns = [
    path("", views.thread_list, name="thread-list"),
    path("threads.json", views.thread_list_json, name="thread-list-json"),
    path("threads/new/", views.thread_new, name="thread-new"),
    path("threads/<str:thread_id>/", views.thread_detail, name="thread-detail"),
    path("threads/<str:thread_id>/read/", views.thread_read, name="thread-read-mark"),
    path(
        "threads/<str:thread_id>/settings/",
        views.thread_settings,
        name="thread-settings",
    ),
    path("render/markdown/", views.render_markdown, name="render-markdown"),
]
