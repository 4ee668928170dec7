/*
 * The thread list: the Chats page's body and the chat page's sidebar (the same
 * markup, templates/chat/thread_items.html). There is no per-user event
 * stream, so the list polls /threads.json every few seconds while the page is
 * visible (and at once when it becomes visible again, or when the chat page
 * marks its thread read). Unread marks come from the server (each user's read
 * mark, chat/selectors.py), so every device agrees.
 *
 * The search box asks /threads.json?q=... (titles and message text, searched
 * on the server) and shows each match's snippet; managers rename a thread in
 * place (PATCH /api/threads/<id>/) and delete it after a confirmation
 * (DELETE). On narrow screens the chat page's sidebar is a drawer behind the
 * "Chats" button: Esc or the close button shuts it and gives focus back.
 */
(function () {
  "use strict";

  var list = document.getElementById("thread-list");
  if (!list) return;
  var empty = document.getElementById("thread-list-empty");
  var announcer = document.getElementById("thread-list-status");
  var errorBox = document.getElementById("thread-list-error");
  var searchInput = document.getElementById("thread-search-input");
  var searchForm = searchInput ? searchInput.form : null;
  var jsonUrl = list.dataset.jsonUrl;
  var apiUrl = list.dataset.apiUrl;
  var pollMs = parseInt(list.dataset.pollMs, 10) || 5000;
  var currentId = list.dataset.currentId || "";
  var currentUser = list.dataset.username || "";
  var previews = list.dataset.previews === "true";
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrfToken = csrfMeta ? csrfMeta.content : "";
  var emptyHtml = empty ? empty.innerHTML : "";
  var SEARCH_DELAY_MS = 250;

  var query = "";
  var timer = null;
  var inFlight = false;
  var pollAgain = false;
  var generation = 0; // answers to an older query are dropped

  // --- drawing ----------------------------------------------------------------

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";
  var ICONS = {
    rename: "M11.5 1.8l2.7 2.7-8.6 8.6-3.3.6.6-3.3z",
    delete: "M2.5 4h11M6 4V2.5h4V4M4 4l.7 9.5h6.6L12 4",
  };

  function icon(name) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("width", "16");
    svg.setAttribute("height", "16");
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", ICONS[name]);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "1.4");
    path.setAttribute("stroke-linejoin", "round");
    svg.appendChild(path);
    return svg;
  }

  function actionButton(kind, label, threadId) {
    var button = make("button", "icon-button thread-" + kind);
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-describedby", "thread-title-" + threadId);
    button.title = label;
    button.appendChild(icon(kind));
    return button;
  }

  function buildItem(thread) {
    var item = make("li", "thread-item");
    item.dataset.threadId = thread.id;
    var row = make("div", "thread-row");
    var link = make("a", "thread-link");
    var title = make("span", "thread-title");
    title.id = "thread-title-" + thread.id;
    link.appendChild(title);
    var badge = make("span", "unread-badge");
    badge.appendChild(make("span", "unread-label", "New activity"));
    badge.hidden = true;
    link.appendChild(badge);
    var running = make("span", "running-badge", "replying…");
    running.hidden = true;
    link.appendChild(running);
    row.appendChild(link);
    item.appendChild(row);
    var meta = make("p", "thread-meta");
    meta.appendChild(make("span", "thread-agent"));
    meta.appendChild(make("span", "thread-owner"));
    meta.appendChild(make("time", "thread-time"));
    item.appendChild(meta);
    if (previews) item.appendChild(make("p", "thread-preview"));
    return item;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return iso;
    var now = new Date();
    if (date.toDateString() === now.toDateString()) {
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    return date.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  function setActions(item, thread) {
    var row = item.querySelector(".thread-row");
    var actions = row.querySelector(".thread-actions");
    if (thread.can_manage && !actions) {
      actions = make("span", "thread-actions");
      actions.appendChild(actionButton("rename", "Rename", thread.id));
      actions.appendChild(actionButton("delete", "Delete", thread.id));
      row.appendChild(actions);
    } else if (!thread.can_manage && actions) {
      actions.remove();
    }
    item.dataset.canManage = thread.can_manage ? "true" : "";
  }

  function isCurrent(threadId) {
    return threadId === currentId;
  }

  function showUnread(item, unread) {
    // The thread on screen is being read: never "new" while it is shown.
    var shown = unread && !(isCurrent(item.dataset.threadId) && document.visibilityState === "visible");
    item.classList.toggle("unread", shown);
    item.querySelector(".unread-badge").hidden = !shown;
  }

  function fillItem(item, thread) {
    item.dataset.updatedAt = thread.updated_at;
    item.dataset.unread = thread.unread ? "true" : "";
    var link = item.querySelector(".thread-link");
    link.href = thread.url;
    item.classList.toggle("current", isCurrent(thread.id));
    if (isCurrent(thread.id)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    if (!item.classList.contains("editing")) {
      var title = item.querySelector(".thread-title");
      title.textContent = thread.title;
      title.title = thread.title; // the whole title on hover when it is cut short
    }
    item.querySelector(".thread-agent").textContent = thread.agent;
    item.querySelector(".thread-owner").textContent =
      thread.owner !== currentUser ? "shared by " + thread.owner : "";
    var time = item.querySelector(".thread-time");
    time.dateTime = thread.updated_at;
    time.textContent = formatTime(thread.updated_at);
    item.querySelector(".running-badge").hidden = !thread.running;
    showUnread(item, thread.unread);
    setActions(item, thread);
    fillPreview(item, thread);
  }

  function fillPreview(item, thread) {
    var preview = item.querySelector(".thread-preview");
    var match = thread.match;
    if (!match || match.in !== "message") {
      if (preview && !previews) preview.remove();
      if (!preview || !previews) return;
      preview.textContent = "";
      preview.classList.remove("thread-snippet");
      if (thread.preview) {
        preview.appendChild(make("span", "preview-author", thread.preview_author + ":"));
        preview.appendChild(document.createTextNode(" " + thread.preview));
      } else {
        preview.textContent = "No messages yet.";
      }
      return;
    }
    if (!preview) {
      preview = make("p", "thread-preview");
      item.appendChild(preview);
    }
    preview.classList.add("thread-snippet");
    preview.textContent = "";
    highlight(preview, match.snippet, query);
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // The searched words in <mark>, built from text nodes (a snippet is never HTML).
  function highlight(node, text, words) {
    var terms = (words.match(/[\p{L}\p{N}_]+/gu) || []).map(escapeRegExp);
    if (!terms.length) {
      node.textContent = text;
      return;
    }
    var pattern = new RegExp("(" + terms.join("|") + ")", "giu");
    text.split(pattern).forEach(function (part, index) {
      if (!part) return;
      node.appendChild(index % 2 ? make("mark", null, part) : document.createTextNode(part));
    });
  }

  function apply(threads) {
    var existing = new Map();
    list.querySelectorAll("li.thread-item").forEach(function (item) {
      existing.set(item.dataset.threadId, item);
    });
    var added = [];
    threads.forEach(function (thread, index) {
      var item = existing.get(thread.id);
      if (!item) {
        item = buildItem(thread);
        added.push(thread.title);
      }
      existing.delete(thread.id);
      fillItem(item, thread);
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
    });
    existing.forEach(function (item) {
      if (!item.classList.contains("editing")) item.remove();
    });
    list.classList.toggle("searching", !!query);
    showEmpty(threads.length === 0);
    showToggleUnread();
    return added;
  }

  function showEmpty(isEmpty) {
    if (!empty) return;
    empty.hidden = !isEmpty;
    if (!isEmpty) return;
    if (query) empty.textContent = "No chats match “" + query + "”.";
    else empty.innerHTML = emptyHtml; // the server's own markup, with its link
  }

  function announce(text) {
    if (announcer) announcer.textContent = text;
  }

  function showError(text) {
    if (!errorBox) return;
    errorBox.textContent = text || "";
    errorBox.hidden = !text;
  }

  // --- polling and search ---------------------------------------------------------

  function listUrl() {
    return query ? jsonUrl + "?q=" + encodeURIComponent(query) : jsonUrl;
  }

  function poll() {
    clearTimeout(timer);
    if (document.visibilityState === "hidden") {
      timer = setTimeout(poll, pollMs);
      return;
    }
    if (inFlight) {
      pollAgain = true;
      return;
    }
    inFlight = true;
    var asked = generation;
    var searching = query;
    fetch(listUrl(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (asked !== generation) return; // the query changed meanwhile
        var threads = data.threads || [];
        var added = apply(threads);
        if (searching) {
          announce(threads.length === 1 ? "1 chat matches." : threads.length + " chats match.");
        } else if (added.length) {
          announce(added.length === 1 ? "New chat: " + added[0] : added.length + " new chats");
        }
      })
      .catch(function () {
        /* try again at the next tick */
      })
      .then(function () {
        inFlight = false;
        if (pollAgain) {
          pollAgain = false;
          poll();
        } else {
          timer = setTimeout(poll, pollMs);
        }
      });
  }

  var searchTimer = null;
  if (searchInput) {
    searchInput.addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () {
        var next = searchInput.value.trim().replace(/\s+/g, " ");
        if (next === query) return;
        query = next;
        generation += 1;
        poll();
      }, SEARCH_DELAY_MS);
    });
    searchInput.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && searchInput.value) {
        event.preventDefault(); // the sidebar stays open: Esc clears first
        event.stopPropagation();
        searchInput.value = "";
        searchInput.dispatchEvent(new Event("input"));
      }
    });
  }
  if (searchForm) {
    searchForm.addEventListener("submit", function (event) {
      event.preventDefault();
      clearTimeout(searchTimer);
      query = searchInput.value.trim().replace(/\s+/g, " ");
      generation += 1;
      poll();
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") poll();
  });
  // The chat page marked its thread read (chat.js): show it at once.
  document.addEventListener("parley:read", function () {
    poll();
  });

  // --- rename and delete ------------------------------------------------------------

  function api(method, threadId, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
    };
    if (body) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(apiUrl + threadId + "/", options).then(function (response) {
      if (response.ok) return response.status === 204 ? null : response.json();
      return response
        .json()
        .catch(function () {
          return {};
        })
        .then(function (data) {
          var message = (data.error && data.error.message) || "That did not work (" + response.status + ").";
          throw new Error(message);
        });
    });
  }

  function startRename(item) {
    if (item.classList.contains("editing")) return;
    var threadId = item.dataset.threadId;
    var title = item.querySelector(".thread-title");
    var before = title.textContent;
    item.classList.add("editing");
    var form = make("form", "rename-form");
    var label = make("label", "visually-hidden", "New title for “" + before + "”");
    var input = make("input", "rename-input");
    input.type = "text";
    input.id = "rename-" + threadId;
    input.maxLength = 200;
    input.value = before;
    label.htmlFor = input.id;
    var save = make("button", "button button-primary button-small", "Save");
    save.type = "submit";
    var cancel = make("button", "button button-small", "Cancel");
    cancel.type = "button";
    form.appendChild(label);
    form.appendChild(input);
    form.appendChild(save);
    form.appendChild(cancel);
    var row = item.querySelector(".thread-row");
    row.hidden = true;
    item.insertBefore(form, row.nextSibling);
    input.focus();
    input.select();

    function finish(focusRename) {
      form.remove();
      row.hidden = false;
      item.classList.remove("editing");
      if (focusRename) {
        var button = item.querySelector(".thread-rename");
        if (button) button.focus();
      }
    }

    cancel.addEventListener("click", function () {
      finish(true);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(true);
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var next = input.value.trim();
      if (next === before) {
        finish(true);
        return;
      }
      save.disabled = true;
      api("PATCH", threadId, { title: next })
        .then(function (thread) {
          var shown = thread.title || title.textContent;
          title.textContent = shown;
          title.title = shown;
          finish(true);
          showError("");
          announce("Renamed to “" + shown + "”.");
          poll();
        })
        .catch(function (error) {
          save.disabled = false;
          showError(error.message);
          input.focus();
        });
    });
  }

  function deleteThread(item) {
    var threadId = item.dataset.threadId;
    var title = item.querySelector(".thread-title").textContent;
    if (!window.confirm("Delete the chat “" + title + "”? Its messages are deleted for everyone in it.")) return;
    api("DELETE", threadId)
      .then(function () {
        if (isCurrent(threadId)) {
          window.location.assign("/");
          return;
        }
        var next = item.nextElementSibling || item.previousElementSibling;
        item.remove();
        showError("");
        announce("Deleted “" + title + "”.");
        showEmpty(list.children.length === 0);
        var focusTarget = next ? next.querySelector(".thread-link") : searchInput;
        if (focusTarget) focusTarget.focus();
      })
      .catch(function (error) {
        showError(error.message);
      });
  }

  list.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button || !list.contains(button)) return;
    var item = button.closest("li.thread-item");
    if (button.classList.contains("thread-rename")) startRename(item);
    else if (button.classList.contains("thread-delete")) deleteThread(item);
  });

  // --- the sidebar as a drawer on narrow screens -------------------------------------

  var sidebar = document.getElementById("sidebar");
  var toggle = document.getElementById("sidebar-toggle");
  var closeButton = document.getElementById("sidebar-close");
  var backdrop = document.getElementById("sidebar-backdrop");

  function showToggleUnread() {
    if (!toggle) return;
    var any = Array.prototype.some.call(list.querySelectorAll("li.thread-item"), function (item) {
      return item.classList.contains("unread");
    });
    toggle.querySelector(".toggle-unread").hidden = !any;
  }

  function setDrawer(open, restoreFocus) {
    if (!sidebar || !toggle) return;
    sidebar.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (backdrop) backdrop.hidden = !open;
    // A drawer over the page: what is behind it is out of reach meanwhile.
    ["chat", "site-header"].forEach(function (id) {
      var behind = document.getElementById(id);
      if (behind) behind.inert = open;
    });
    if (open) {
      (searchInput || closeButton).focus();
    } else if (restoreFocus) {
      toggle.focus();
    }
  }

  if (sidebar && toggle) {
    toggle.addEventListener("click", function () {
      setDrawer(!sidebar.classList.contains("open"), false);
    });
    if (closeButton) {
      closeButton.addEventListener("click", function () {
        setDrawer(false, true);
      });
    }
    if (backdrop) {
      backdrop.addEventListener("click", function () {
        setDrawer(false, true);
      });
    }
    sidebar.addEventListener("keydown", function (event) {
      if (event.key !== "Escape" || event.defaultPrevented) return;
      if (!sidebar.classList.contains("open")) return;
      event.preventDefault(); // not also "stop the reply" (chat.js)
      setDrawer(false, true);
    });
    // Widening the window turns the drawer back into a column.
    var narrow = window.matchMedia("(max-width: 700px)");
    var onWidth = function () {
      if (!narrow.matches && sidebar.classList.contains("open")) setDrawer(false, false);
    };
    if (narrow.addEventListener) narrow.addEventListener("change", onWidth);
    var current = list.querySelector("li.current");
    if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest" });
  }

  // Server-drawn items: local times, the current thread never "new".
  list.querySelectorAll("li.thread-item").forEach(function (item) {
    var time = item.querySelector(".thread-time");
    if (time) time.textContent = formatTime(time.getAttribute("datetime"));
    if (isCurrent(item.dataset.threadId)) showUnread(item, false);
  });
  showToggleUnread();
  timer = setTimeout(poll, pollMs);
})();
