"""Server-rendered pages of the web UI."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def thread_list(request):
    return render(request, "chat/thread_list.html", {})
