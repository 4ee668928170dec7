/*
 * The thread list, kept live by polling /threads.json (there is no per-user
 * socket yet). A thread shows "New activity" when it was updated after the
 * last event this browser saw in it; the chat page records that server time
 * in localStorage under parley:seen:<thread id>.
 */
(function () {
  "use strict";

  var list = document.getElementById("thread-list");
  if (!list) return;
  var empty = document.getElementById("thread-list-empty");
  var announcer = document.getElementById("thread-list-status");
  var jsonUrl = list.dataset.jsonUrl;
  var pollMs = parseInt(list.dataset.pollMs, 10) || 5000;
  var currentUser = (document.querySelector(".account-name strong") || {}).textContent || "";
  var INIT_KEY = "parley:seen-initialised";

  function storage() {
    try {
      return window.localStorage;
    } catch (error) {
      return null;
    }
  }

  function seenAt(threadId) {
    var store = storage();
    return store ? store.getItem("parley:seen:" + threadId) : null;
  }

  function isUnread(thread) {
    var seen = seenAt(thread.id);
    if (!seen) return true;
    return Date.parse(thread.updated_at) > Date.parse(seen);
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

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function buildItem(thread) {
    var item = make("li", "thread-item");
    item.dataset.threadId = thread.id;
    var link = make("a", "thread-link");
    link.appendChild(make("span", "thread-title"));
    var badge = make("span", "unread-badge", "New activity");
    badge.hidden = true;
    link.appendChild(badge);
    item.appendChild(link);
    var meta = make("p", "thread-meta");
    meta.appendChild(make("span", "thread-agent"));
    meta.appendChild(make("span", "thread-owner"));
    meta.appendChild(make("time", "thread-time"));
    item.appendChild(meta);
    item.appendChild(make("p", "thread-preview"));
    return item;
  }

  function fillItem(item, thread) {
    item.dataset.updatedAt = thread.updated_at;
    var link = item.querySelector(".thread-link");
    link.href = thread.url;
    var title = item.querySelector(".thread-title");
    title.textContent = thread.title;
    title.title = thread.title; // the whole title on hover when it is cut short
    item.querySelector(".thread-agent").textContent = thread.agent;
    var owner = item.querySelector(".thread-owner");
    if (owner) owner.textContent = thread.owner !== currentUser ? "shared by " + thread.owner : "";
    var time = item.querySelector(".thread-time");
    time.dateTime = thread.updated_at;
    time.textContent = formatTime(thread.updated_at);
    var preview = item.querySelector(".thread-preview");
    preview.textContent = "";
    if (thread.preview) {
      preview.appendChild(make("span", "preview-author", thread.preview_author + ":"));
      preview.appendChild(document.createTextNode(" " + thread.preview));
    } else {
      preview.textContent = "No messages yet.";
    }
    var unread = isUnread(thread);
    item.classList.toggle("unread", unread);
    item.querySelector(".unread-badge").hidden = !unread;
  }

  function currentThreads() {
    return Array.from(list.querySelectorAll("li.thread-item")).map(function (item) {
      var time = item.querySelector(".thread-time");
      return { id: item.dataset.threadId, updated_at: item.dataset.updatedAt, time: time };
    });
  }

  // First visit in this browser: nothing is "new" yet.
  (function initialiseSeen() {
    var store = storage();
    if (!store || store.getItem(INIT_KEY)) return;
    currentThreads().forEach(function (thread) {
      if (!store.getItem("parley:seen:" + thread.id)) {
        store.setItem("parley:seen:" + thread.id, thread.updated_at);
      }
    });
    store.setItem(INIT_KEY, "1");
  })();

  // Server-rendered items: local times and unread markers.
  currentThreads().forEach(function (thread) {
    var item = list.querySelector('li[data-thread-id="' + thread.id + '"]');
    thread.time.textContent = formatTime(thread.updated_at);
    var unread = isUnread(thread);
    item.classList.toggle("unread", unread);
    item.querySelector(".unread-badge").hidden = !unread;
  });

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
      item.remove();
    });
    empty.hidden = threads.length > 0;
    if (added.length) {
      announcer.textContent = added.length === 1 ? "New chat: " + added[0] : added.length + " new chats";
    }
  }

  var timer = null;
  var inFlight = false;

  function poll() {
    clearTimeout(timer);
    if (document.hidden || inFlight) {
      timer = setTimeout(poll, pollMs);
      return;
    }
    inFlight = true;
    fetch(jsonUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (data) {
        apply(data.threads || []);
      })
      .catch(function () {
        /* try again at the next tick */
      })
      .then(function () {
        inFlight = false;
        timer = setTimeout(poll, pollMs);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) poll();
  });
  window.addEventListener("storage", function (event) {
    if (event.key && event.key.indexOf("parley:seen:") === 0) poll();
  });
  timer = setTimeout(poll, pollMs);
})();
