/*
 * The chat view: one thread, live over its WebSocket (docs/protocol.md).
 *
 * The socket sends `status` connected, then a snapshot (history plus the text
 * so far of runs in flight), then live events in event_id order. The client
 * keeps the last event id it applied; after a network blip it reconnects with
 * ?last_event_id=N and receives exactly the events it missed, so streamed
 * text is neither duplicated nor lost. A page load starts from a snapshot.
 *
 * Replies stream in as plain text (textContent, never parsed as HTML); once a
 * reply is complete the server renders its Markdown to sanitized HTML
 * (POST /render/markdown/) and only that HTML is inserted as markup.
 */
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) return;

  var threadId = root.dataset.threadId;
  // The thread's default agent (it answers messages that name no agent).
  var agentName = root.dataset.agent;
  var renderUrl = root.dataset.renderUrl;
  var loginUrl = root.dataset.loginUrl;
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrfToken = csrfMeta ? csrfMeta.content : "";

  var el = {
    list: document.getElementById("messages"),
    empty: document.getElementById("messages-empty"),
    connection: document.getElementById("connection"),
    connectionLabel: document.getElementById("connection-label"),
    alerts: document.getElementById("alerts"),
    form: document.getElementById("composer"),
    input: document.getElementById("composer-input"),
    send: document.getElementById("send-button"),
    stop: document.getElementById("stop-button"),
    observerNote: document.getElementById("observer-note"),
    roleLabel: document.getElementById("role-label"),
    presence: document.getElementById("presence"),
    presenceList: document.getElementById("presence-list"),
    title: document.getElementById("thread-title"),
    agentsLabel: document.getElementById("agents-label"),
    mentions: document.getElementById("mention-list"),
    floor: document.getElementById("team-floor"),
  };

  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 8000;
  var PING_EVERY_MS = 20000;
  var PONG_TIMEOUT_MS = 10000;
  var RESUME_TIMEOUT_MS = 5000;
  var ACTIVE = { queued: true, running: true, cancelling: true };
  var FINAL = { completed: true, cancelled: true, failed: true };
  var CLOSE_MESSAGES = {
    4401: "You are signed out. Log in again to keep chatting.",
    4403: "You no longer have access to this chat.",
    4404: "This chat no longer exists.",
  };

  var state = {
    socket: null,
    open: false, // the server said `connected`
    role: root.dataset.role,
    // "markdown" (replies rendered once complete) or "text" (the thread's
    // stream_format: shown as written).
    streamFormat: root.dataset.streamFormat || "markdown",
    user: root.dataset.username,
    lastEventId: null,
    awaitingResume: false,
    resumeTimer: null,
    attempt: 0,
    reconnectTimer: null,
    stopped: false, // no more reconnects (chat deleted, access lost)
    pingTimer: null,
    pongTimer: null,
    messages: new Map(), // message id -> <li>
    runs: new Map(), // run id -> run record
    htmlCache: new Map(), // assistant message id -> sanitized HTML
    // request_id -> {text, clientId}: sent, not yet confirmed by its `message`.
    // Resent (same client_id: the server posts it once) after a reconnect;
    // the text goes back into the box if the send is refused.
    pendingSends: new Map(),
    renderQueue: new Set(),
    openSteps: new Set(), // keys of the tool steps shown expanded
    // The thread's agents by name, the default first (`@` addresses them).
    agents: readAgents(),
    renderScheduled: false,
    requestCounter: 0,
  };

  // --- small helpers -----------------------------------------------------

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function readAgents() {
    var data = document.getElementById(root.dataset.agentsId || "thread-agents");
    try {
      var names = data ? JSON.parse(data.textContent) : null;
      if (Array.isArray(names) && names.length) return names;
    } catch (error) {
      /* fall back to the default agent alone */
    }
    return [agentName];
  }

  // --- avatars: initials on a colour of their own -------------------------
  //
  // An agent's colour comes from its place among the thread's agents (the
  // golden angle apart, so no two agents of a thread look alike); a person's,
  // or an agent no longer in the thread, from a hash of the name.

  function initials(name) {
    var parts = String(name || "?").split(/[\s._-]+/).filter(Boolean);
    var letters = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] || "?").slice(0, 2);
    return letters.toUpperCase();
  }

  function nameHue(name) {
    var hash = 0;
    for (var index = 0; index < name.length; index += 1) {
      hash = (hash * 31 + name.charCodeAt(index)) % 3600;
    }
    return hash % 360;
  }

  function paintAvatar(node, name, person) {
    node.textContent = initials(name);
    node.dataset.name = name;
    var place = person ? -1 : state.agents.indexOf(name);
    var hue = place >= 0 ? Math.round((210 + place * 137.508) % 360) : nameHue(name);
    node.style.setProperty("--avatar-hue", String(hue));
    node.classList.toggle("avatar-person", !!person);
  }

  function makeAvatar(name, person) {
    var node = make("span", "avatar");
    node.setAttribute("aria-hidden", "true");
    paintAvatar(node, name, person);
    return node;
  }

  function repaintAvatars() {
    document.querySelectorAll(".avatar[data-name]").forEach(function (node) {
      paintAvatar(node, node.dataset.name, node.classList.contains("avatar-person"));
    });
  }

  function showAgents() {
    if (!el.agentsLabel) return;
    el.agentsLabel.textContent = "";
    state.agents.forEach(function (name, index) {
      if (index) el.agentsLabel.appendChild(document.createTextNode(", "));
      el.agentsLabel.appendChild(make("strong", "agent-name", name));
    });
  }

  function canWrite() {
    return state.role === "owner" || state.role === "participant";
  }

  // Follow new text while the reader is at the bottom; leave them be once they
  // scroll up to read something older.
  var stickToBottom = true;

  function atBottom() {
    var scroller = el.list;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function scrollToBottom() {
    el.list.scrollTop = el.list.scrollHeight;
  }

  el.list.addEventListener("scroll", function () {
    stickToBottom = atBottom();
  }, { passive: true });

  new MutationObserver(function () {
    if (stickToBottom) scrollToBottom();
  }).observe(el.list, { childList: true, subtree: true, characterData: true });

  function updateEmpty() {
    el.empty.hidden = el.list.children.length > 0;
  }

  // Unread marks live on the server (POST /threads/<id>/read/, the same mark
  // as the API's POST /api/threads/<id>/read/), so every device and the
  // sidebar agree. Opening the page marked the thread read; events that
  // arrive while the page is visible mark it again, half a second apart at
  // most. The sidebar (threads.js) hears "parley:read" and refreshes.
  var readUrl = root.dataset.readUrl;
  var readTimer = null;
  var readInFlight = false;
  var readAgain = false;
  var READ_DELAY_MS = 500;

  function markRead(leaving) {
    if (!readUrl || state.stopped || document.visibilityState !== "visible") return;
    if (readInFlight) {
      readAgain = true;
      return;
    }
    readInFlight = true;
    fetch(readUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
      keepalive: !!leaving, // outlives the page when the reader moves on
    })
      .then(function (response) {
        if (response.ok) document.dispatchEvent(new CustomEvent("parley:read", { detail: { threadId: threadId } }));
      })
      .catch(function () {
        /* the next event or visit marks it */
      })
      .then(function () {
        readInFlight = false;
        if (readAgain) {
          readAgain = false;
          scheduleRead();
        }
      });
  }

  function showsNewMessages(frame) {
    if (frame.type === "message" || frame.type === "state_complete") return true;
    var content = frame.type === "status" ? frame.content || {} : {};
    return content.state === "snapshot" || content.state === "resynced";
  }

  function scheduleRead() {
    if (readTimer) return;
    readTimer = setTimeout(function () {
      readTimer = null;
      markRead(false);
    }, READ_DELAY_MS);
  }

  // Leaving right after a message arrived: what was on screen was read.
  window.addEventListener("pagehide", function () {
    if (!readTimer) return;
    clearTimeout(readTimer);
    readTimer = null;
    markRead(true);
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") scheduleRead();
  });

  var alertTimer = null;
  function showAlert(text, kind, sticky) {
    var item = make("p", "alert alert-" + (kind || "error"), text);
    el.alerts.textContent = "";
    el.alerts.appendChild(item);
    clearTimeout(alertTimer);
    if (kind !== "sticky" && !sticky) {
      alertTimer = setTimeout(function () {
        if (item.parentNode) item.parentNode.removeChild(item);
      }, 8000);
    }
  }

  // A burst: "queued (N ahead)" until the message it is about is stored.
  var queuedNotice = null;

  function showQueuedNotice(requestId, ahead) {
    showAlert("Busy moment: your message is queued (" + ahead + " ahead) and appears here as soon as it is stored.", "info", true);
    queuedNotice = { requestId: requestId, item: el.alerts.lastChild };
  }

  function clearQueuedNotice(requestId) {
    if (!queuedNotice || queuedNotice.requestId !== requestId) return;
    if (queuedNotice.item && queuedNotice.item.parentNode) {
      queuedNotice.item.parentNode.removeChild(queuedNotice.item);
    }
    queuedNotice = null;
  }

  // --- connection state --------------------------------------------------

  function setConnection(name, label) {
    var labels = {
      connecting: "Connecting…",
      connected: "Connected",
      reconnecting: "Reconnecting…",
      offline: "Offline",
    };
    el.connection.dataset.state = name;
    el.connectionLabel.textContent = label || labels[name];
    updateComposer();
    state.runs.forEach(showRunState);
  }

  function updateComposer() {
    var writable = canWrite();
    el.input.disabled = !writable;
    el.send.disabled = !writable || !state.open;
    el.observerNote.hidden = writable;
    if (!writable) el.input.placeholder = "Read only";
    else if (state.agents.length > 1) el.input.placeholder = "Message " + agentName + ", or @ for another agent…";
    else el.input.placeholder = "Message " + agentName + "…";
    if (!writable) closeMentions();
    var running = null;
    var active = false;
    var cancelling = false;
    state.runs.forEach(function (run) {
      if (ACTIVE[run.status]) active = true;
      if (run.status === "running" || run.status === "cancelling") running = run;
    });
    if (running && running.status === "cancelling") cancelling = true;
    el.stop.hidden = !(writable && active);
    el.stop.disabled = !state.open || cancelling;
    el.stop.textContent = cancelling ? "Stopping…" : "Stop";
  }

  function setRole(role) {
    state.role = role;
    var labels = { owner: "you are the owner", participant: "you are a participant",
      observer: "you are an observer", staff: "you are staff (read only)",
      none: "no access" };
    if (el.roleLabel) el.roleLabel.textContent = labels[role] || "you are " + role;
    updateComposer();
  }

  // --- socket --------------------------------------------------------------

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + "/ws/threads/" + threadId + "/";
    if (state.lastEventId != null) url += "?last_event_id=" + state.lastEventId;
    return url;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.stopped) return;
    setConnection(state.attempt ? "reconnecting" : "connecting");
    var socket;
    try {
      socket = new WebSocket(socketUrl(), ["parley"]);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    socket.onmessage = function (event) {
      if (socket !== state.socket) return;
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      handleFrame(frame);
    };
    socket.onclose = function (event) {
      if (socket !== state.socket) return;
      onSocketGone(event.code);
    };
    socket.onerror = function () {
      /* a close event follows and decides what to do */
    };
  }

  function detachSocket() {
    var socket = state.socket;
    state.socket = null;
    state.open = false;
    stopHeartbeat();
    clearTimeout(state.resumeTimer);
    state.awaitingResume = false;
    if (socket) {
      socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch (error) {
        /* already closed */
      }
    }
  }

  function onSocketGone(code) {
    detachSocket();
    if (CLOSE_MESSAGES[code]) {
      state.stopped = true;
      setRole("none"); // nothing can be written here any more
      showPresence([]);
      setConnection("offline", CLOSE_MESSAGES[code]);
      showAlert(CLOSE_MESSAGES[code], "sticky");
      if (code === 4401) {
        var link = make("a", null, "Log in");
        link.href = loginUrl;
        el.alerts.firstChild.appendChild(document.createTextNode(" "));
        el.alerts.firstChild.appendChild(link);
      }
      return;
    }
    if (code === 1009) showAlert("That message was too large to send.");
    if (code === 4429) state.attempt = Math.max(state.attempt, 3);
    if (code === 4503) state.attempt = Math.max(state.attempt, 1); // server busy: back off
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    if (state.stopped) return;
    if (navigator.onLine === false) {
      setConnection("offline", "Offline — waiting for the network");
      return; // the `online` event reconnects
    }
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempt));
    delay = Math.round(delay * (0.8 + Math.random() * 0.4));
    state.attempt += 1;
    setConnection("reconnecting", "Reconnecting in " + Math.max(1, Math.round(delay / 1000)) + " s…");
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    detachSocket();
    state.attempt = Math.max(state.attempt, 1);
    connect();
  }

  function sendFrame(frame) {
    if (!state.socket || !state.open || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function startHeartbeat() {
    stopHeartbeat();
    state.pingTimer = setInterval(function () {
      if (!sendFrame({ type: "ping", content: null })) return;
      clearTimeout(state.pongTimer);
      state.pongTimer = setTimeout(function () {
        // No answer: the connection is dead even if the browser has not noticed.
        reconnectNow();
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function stopHeartbeat() {
    clearInterval(state.pingTimer);
    clearTimeout(state.pongTimer);
  }

  function requestResume() {
    if (state.awaitingResume) return;
    state.awaitingResume = true;
    sendFrame({ type: "resume", content: { last_event_id: state.lastEventId } });
    clearTimeout(state.resumeTimer);
    state.resumeTimer = setTimeout(function () {
      if (state.awaitingResume) reconnectNow();
    }, RESUME_TIMEOUT_MS);
  }

  // --- frames --------------------------------------------------------------

  function handleFrame(frame) {
    var eventId = frame.event_id;
    if (eventId != null) {
      if (state.lastEventId != null) {
        if (eventId <= state.lastEventId) return; // already applied
        if (eventId > state.lastEventId + 1) {
          requestResume(); // a gap: ask for what is missing, apply nothing out of order
          return;
        }
      }
      state.lastEventId = eventId;
      if (state.awaitingResume) {
        state.awaitingResume = false;
        clearTimeout(state.resumeTimer);
      }
    }
    if (showsNewMessages(frame)) scheduleRead();
    var handler = handlers[frame.type];
    if (handler) handler(frame);
  }

  var handlers = {
    status: onStatus,
    message: onMessage,
    response: onResponse,
    state: onState,
    state_complete: onStateComplete,
    input_request: onInputRequest,
    error: onError,
    pong: function () {
      clearTimeout(state.pongTimer);
    },
  };

  function onStatus(frame) {
    var content = frame.content || {};
    switch (content.state) {
      case "connected":
        state.open = true;
        state.attempt = 0;
        if (content.role) setRole(content.role);
        setConnection("connected");
        startHeartbeat();
        resendPending();
        break;
      case "snapshot":
      case "resynced":
        applySnapshot(content);
        floorFromSnapshot(content);
        break;
      case "team":
        onTeamStatus(frame, content);
        break;
      case "queued":
      case "running":
      case "cancelling":
        if (frame.run_id || content.run_id) {
          var run = ensureRun(frame.run_id || content.run_id, frame.agent);
          if (!FINAL[run.status]) setRunStatus(run, content.state, content);
          if (content.state === "running") floorOnRunning(frame);
        } else if (content.state === "queued" && state.pendingSends.has(frame.request_id)) {
          // A burst: our message waits to be stored behind `position` others.
          showQueuedNotice(frame.request_id, content.position);
        }
        break;
      case "thread_updated":
        if (content.config) state.streamFormat = content.config.stream_format || "markdown";
        if (content.config) teamFromConfig(content.config.team);
        if (typeof content.agent === "string") agentName = content.agent;
        if (Array.isArray(content.agents) && content.agents.length) {
          state.agents = content.agents;
        } else if (typeof content.agent === "string" && state.agents[0] !== content.agent) {
          state.agents = [content.agent];
        }
        showAgents();
        repaintAvatars();
        updateComposer();
        if (typeof content.title === "string") {
          var title = content.title || "Chat with " + agentName;
          el.title.textContent = title;
          el.title.title = title; // shown whole on hover when cut short
          document.title = title + " · Parley";
        }
        break;
      case "reset":
        clearConversation();
        showAlert("This chat was reset: its messages were deleted.", "info");
        break;
      case "deleted":
        state.stopped = true;
        detachSocket();
        setConnection("offline", "This chat was deleted");
        showAlert("This chat was deleted.", "sticky");
        el.input.disabled = true;
        el.send.disabled = true;
        el.stop.hidden = true;
        break;
      case "presence":
        showPresence(content.users || []);
        break;
      case "notice":
        // A notice from the project's own code (docs/protocol.md).
        if (typeof content.text === "string") showAlert(content.text, "info");
        break;
      case "role_changed":
        // The owner changed this user's role while the page was open.
        if (content.role) {
          setRole(content.role);
          showAlert(canWrite() ? "You can write in this chat now."
            : "You are now an observer: you can read this chat but not write.", "info");
        }
        break;
      default:
        break;
    }
  }

  function onMessage(frame) {
    var content = frame.content;
    if (!content || !content.id) return;
    if (frame.request_id) {
      state.pendingSends.delete(frame.request_id);
      clearQueuedNotice(frame.request_id);
    }
    if (content.role === "assistant") {
      var run = ensureRun(content.run_id || "message:" + content.id, content.agent);
      finishRun(run, { text: content.text, status: content.status || "completed", error: content.error, messageId: content.id, createdAt: content.created_at });
      showAskedInputs(run, content.inputs);
      showToolSteps(run, content.tool_steps);
      return;
    }
    if (state.messages.has(content.id)) return;
    appendUserMessage(content);
  }

  function onResponse(frame) {
    if (!frame.run_id) return;
    var run = ensureRun(frame.run_id, frame.agent);
    if (FINAL[run.status]) return; // the complete text is already shown
    if (frame.stream_index < run.nextIndex) return; // a duplicate
    if (frame.stream_index > run.nextIndex) {
      // A chunk is missing although no event was: start over from a snapshot.
      state.awaitingResume = true;
      sendFrame({ type: "resume", content: { last_event_id: null } });
      return;
    }
    if (run.status === "queued" || !run.status) setRunStatus(run, "running");
    run.text += frame.content;
    run.nextIndex += 1;
    appendStreamText(run, frame.content);
  }

  function onState(frame) {
    var content = frame.content || {};
    var data = content.data || {};
    if (!frame.run_id) return;
    var run = ensureRun(frame.run_id, frame.agent);
    if (content.kind === "input_received" || content.kind === "input_timeout") {
      var prompt = run.prompts.get(data.input_id);
      if (prompt) {
        var note;
        if (prompt.dataset.kind === "approval") {
          var approved = content.kind === "input_received" && data.answer === "approved";
          note = content.kind === "input_timeout" ? "Nobody approved in time: it did not run."
            : (approved ? "Approved" : "Denied") + (data.by ? " by " + data.by : "") + ".";
          var step = prompt.dataset.callId != null ? findToolStep(run, prompt.dataset.callId, false) : null;
          if (step) setStepState(step, approved ? "running" : "denied");
        } else {
          note = content.kind === "input_received"
            ? "Answered" + (data.by ? " by " + data.by : "") + (typeof data.answer === "string" ? ": " + data.answer : ".")
            : "No answer in time.";
        }
        closePrompt(prompt, note);
      }
    } else if (content.kind === "tool_call") {
      addToolStep(run, data);
    } else if (content.kind === "tool_result") {
      setToolResult(run, data);
    } else if (content.kind === "notice") {
      // Something to know while the reply goes on (a slow tool, ...).
      if (typeof data.message === "string") showAlert(data.message, "info");
    }
  }

  // --- tool steps: each call and its result, in order, collapsible -----------
  //
  // A step is a disclosure: a button (aria-expanded, aria-controls) with the
  // tool's name and how it ended, over its arguments and result. Which steps
  // are open (and a focused toggle) survive a snapshot that redraws the run.

  var STEP_OPEN = { running: true, awaiting: true };
  var STEP_LABELS = { running: "running…", awaiting: "waiting for approval",
    completed: "done", failed: "error", denied: "denied", cancelled: "stopped",
    pending: "running…" };
  var RESULT_LABELS = { completed: "Result", failed: "Error", denied: "Not run",
    cancelled: "Stopped" };
  var toolStepCounter = 0;

  function argumentsText(value) {
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value, null, 2);
    } catch (error) {
      return String(value);
    }
  }

  // The step of a call id: the one not ended yet, else (`any`) the latest.
  function findToolStep(run, id, any) {
    var steps = run.toolBox.querySelectorAll(".tool-step");
    var latest = null;
    for (var index = steps.length - 1; index >= 0; index -= 1) {
      if (steps[index].dataset.callId !== (id || "")) continue;
      if (STEP_OPEN[steps[index].dataset.state]) return steps[index];
      if (!latest) latest = steps[index];
    }
    return any ? latest : null;
  }

  function setStepState(step, status) {
    step.dataset.state = status;
    step.querySelector(".tool-status").textContent = STEP_LABELS[status] || status;
  }

  function setStepExpanded(step, expanded) {
    var button = step.querySelector(".tool-toggle");
    button.setAttribute("aria-expanded", expanded ? "true" : "false");
    step.querySelector(".tool-detail").hidden = !expanded;
    if (expanded) state.openSteps.add(step.dataset.key);
    else state.openSteps.delete(step.dataset.key);
  }

  function addToolStep(run, call) {
    // A snapshot may already show a call whose frame follows it: once is enough.
    var shown = findToolStep(run, call.id, false);
    if (shown) return shown;
    toolStepCounter += 1;
    var detailId = "tool-step-" + toolStepCounter;
    var step = make("div", "tool-step");
    step.dataset.callId = call.id || "";
    // Stable across redraws of the run: its place among the run's steps.
    step.dataset.key = run.id + "#" + run.toolBox.children.length;
    var button = make("button", "tool-toggle");
    button.type = "button";
    button.setAttribute("aria-controls", detailId);
    button.appendChild(make("span", "tool-chevron")).setAttribute("aria-hidden", "true");
    button.appendChild(make("span", "visually-hidden", "Tool "));
    button.appendChild(make("span", "tool-name", call.name || "tool"));
    button.appendChild(make("span", "tool-status"));
    step.appendChild(button);
    var detail = make("div", "tool-detail");
    detail.id = detailId;
    detail.appendChild(make("p", "tool-label", "Arguments"));
    detail.appendChild(make("pre", "tool-arguments", argumentsText(call.arguments)));
    var resultLabel = make("p", "tool-label tool-result-label");
    resultLabel.hidden = true;
    detail.appendChild(resultLabel);
    var result = make("pre", "tool-output");
    result.hidden = true;
    detail.appendChild(result);
    step.appendChild(detail);
    button.addEventListener("click", function () {
      setStepExpanded(step, button.getAttribute("aria-expanded") !== "true");
    });
    setStepState(step, "running");
    run.toolBox.appendChild(step);
    run.toolBox.hidden = false;
    setStepExpanded(step, state.openSteps.has(step.dataset.key));
    return step;
  }

  function setToolResult(run, result) {
    // The step of that call id still without a result (ids may repeat), else
    // the one a snapshot already showed finished.
    var step = findToolStep(run, result.id, true);
    if (!step) step = addToolStep(run, { id: result.id, name: result.name, arguments: "" });
    var failed = typeof result.error === "string";
    var text = failed ? result.error : result.output;
    var status = result.status;
    // A live result has no status; a denial was already marked when answered.
    if (!status) status = failed ? (step.dataset.state === "denied" ? "denied" : "failed") : "completed";
    if (status === "pending") return;
    setStepState(step, status);
    var output = step.querySelector(".tool-output");
    var label = step.querySelector(".tool-result-label");
    if (text != null) {
      label.textContent = RESULT_LABELS[status] || (failed ? "Error" : "Result");
      label.hidden = false;
      output.textContent = text;
      output.hidden = false;
      output.classList.toggle("tool-error", failed);
    }
  }

  // Tool steps of a run as the history or a snapshot lists them.
  function showToolSteps(run, steps) {
    if (!steps || !steps.length || run.toolBox.children.length) return;
    steps.forEach(function (stored) {
      addToolStep(run, stored);
      if (stored.status && stored.status !== "pending") setToolResult(run, stored);
    });
  }

  // A run that ended leaves no step running.
  function endToolSteps(run) {
    run.toolBox.querySelectorAll(".tool-step").forEach(function (step) {
      if (STEP_OPEN[step.dataset.state]) setStepState(step, run.status === "failed" ? "failed" : "cancelled");
    });
  }

  function onStateComplete(frame) {
    if (!frame.run_id) return;
    var content = frame.content || {};
    var run = ensureRun(frame.run_id, frame.agent);
    finishRun(run, {
      text: content.text || "",
      status: content.status,
      error: content.error,
      messageId: content.message_id,
      chunks: content.chunks,
      createdAt: frame.timestamp,
    });
  }

  function onInputRequest(frame) {
    if (!frame.run_id || !frame.content) return;
    var run = ensureRun(frame.run_id, frame.agent);
    addPrompt(run, frame.content);
  }

  function onError(frame) {
    var content = frame.content || {};
    var message = content.message || "Something went wrong.";
    if (frame.run_id) {
      var run = ensureRun(frame.run_id, frame.agent);
      // Shown once, in the reply it is about; role=alert announces it there.
      run.error.setAttribute("role", "alert");
      setRunError(run, message);
      if (!frame.request_id) return;
    }
    if (frame.request_id && state.pendingSends.has(frame.request_id)) {
      var text = state.pendingSends.get(frame.request_id).text;
      state.pendingSends.delete(frame.request_id);
      if (!el.input.value) el.input.value = text; // nothing the user typed is lost
      message += " Your message was not sent.";
    }
    // Access taken away: the close that follows says so (once).
    var closing = { forbidden: true, thread_not_found: true, not_authenticated: true,
      service_unavailable: true };
    if (!frame.request_id && !frame.run_id && closing[content.code]) return;
    showAlert(message);
    if (content.code === "read_only") setRole("observer");
  }

  // --- rendering the conversation -----------------------------------------

  function clearConversation() {
    el.list.textContent = "";
    state.messages.clear();
    state.runs.clear();
    updateEmpty();
    updateComposer();
  }

  function applySnapshot(content) {
    if (content.presence) showPresence(content.presence);
    // Keep the HTML already rendered for complete replies, keyed by message id.
    el.list.querySelectorAll("li.msg-agent[data-message-id]").forEach(function (item) {
      var body = item.querySelector(".msg-body.markdown");
      if (body) state.htmlCache.set(item.dataset.messageId, renderedHtml(body));
    });
    var focused = document.activeElement;
    var focusedStep = focused && focused.classList.contains("tool-toggle")
      && el.list.contains(focused) ? focused.closest(".tool-step").dataset.key : null;
    clearConversation();
    (content.messages || []).forEach(function (message) {
      if (message.role === "assistant") {
        var run = ensureRun(message.run_id || "message:" + message.id, message.agent);
        finishRun(run, { text: message.text, status: message.status || "completed", error: message.error, messageId: message.id, quiet: true, createdAt: message.created_at });
        // What the run asked the thread, and how each question ended.
        showAskedInputs(run, message.inputs);
        showToolSteps(run, message.tool_steps);
      } else {
        appendUserMessage(message);
      }
    });
    (content.runs || []).forEach(function (progress) {
      var run = ensureRun(progress.run_id, progress.agent);
      run.text = progress.text || "";
      run.nextIndex = progress.next_stream_index || 0;
      run.body.textContent = run.text;
      setRunStatus(run, progress.status);
      showToolSteps(run, progress.tool_steps);
      // Questions still waiting for an answer, when the server includes them.
      var pending = progress.input_requests || (progress.input_request ? [progress.input_request] : []);
      pending.forEach(function (request) {
        addPrompt(run, request);
      });
    });
    if (focusedStep) {
      el.list.querySelectorAll(".tool-step").forEach(function (step) {
        if (step.dataset.key === focusedStep) step.querySelector(".tool-toggle").focus();
      });
    }
    if (content.last_event_id != null) state.lastEventId = content.last_event_id;
    state.awaitingResume = false;
    clearTimeout(state.resumeTimer);
    updateEmpty();
    updateComposer();
  }

  function appendUserMessage(message) {
    var item = make("li", "msg msg-user");
    var author = message.author ? message.author.username : "someone";
    if (author === state.user) item.classList.add("msg-mine");
    item.dataset.messageId = message.id;
    if (message.run_id) item.dataset.runId = message.run_id;
    var meta = make("div", "msg-meta");
    meta.appendChild(makeAvatar(author, true));
    meta.appendChild(make("span", "msg-author", author));
    item.appendChild(meta);
    item.appendChild(make("div", "msg-body plain", message.text));
    setMessageTime(item, message.created_at);
    el.list.appendChild(item);
    state.messages.set(message.id, item);
    updateEmpty();
    return item;
  }

  // The reply of a run: its <li> and what it shows. `agent` names the run's
  // agent where the frame or snapshot says (the default agent until then).
  function ensureRun(runId, agent) {
    var run = state.runs.get(runId);
    if (run) {
      if (agent && agent !== run.agent) setRunAgent(run, agent);
      return run;
    }
    var item = make("li", "msg msg-agent");
    item.dataset.runId = runId;
    item.dataset.agent = agent || agentName;
    var meta = make("div", "msg-meta");
    var avatar = makeAvatar(agent || agentName, false);
    var author = make("span", "msg-author", agent || agentName);
    meta.appendChild(avatar);
    meta.appendChild(author);
    var badge = make("span", "badge");
    badge.hidden = true;
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(badge);
    var body = make("div", "msg-body plain streaming");
    var error = make("p", "msg-error");
    error.hidden = true;
    var prompts = make("div", "msg-prompts");
    var tools = make("div", "tool-steps");
    tools.hidden = true;
    item.appendChild(meta);
    item.appendChild(tools);
    item.appendChild(body);
    item.appendChild(error);
    item.appendChild(prompts);
    run = {
      id: runId,
      agent: agent || agentName,
      avatar: avatar,
      author: author,
      item: item,
      badge: badge,
      body: body,
      error: error,
      promptBox: prompts,
      toolBox: tools,
      prompts: new Map(),
      status: null,
      text: "",
      nextIndex: 0,
      messageId: null,
    };
    // A reply sits right after the message that asked for it.
    var prompt = null;
    el.list.querySelectorAll("li.msg-user").forEach(function (candidate) {
      if (candidate.dataset.runId === runId) prompt = candidate;
    });
    if (prompt && prompt.nextSibling) el.list.insertBefore(item, prompt.nextSibling);
    else el.list.appendChild(item);
    state.runs.set(runId, run);
    updateEmpty();
    return run;
  }

  function setRunAgent(run, agent) {
    run.agent = agent;
    run.author.textContent = agent;
    paintAvatar(run.avatar, agent, false);
    run.item.dataset.agent = agent;
  }

  function setBadge(run, text, kind) {
    run.baseBadge = { text: text, kind: kind }; // what showRunState falls back to
    run.badge.textContent = text || "";
    run.badge.className = "badge" + (kind ? " badge-" + kind : "");
    run.badge.hidden = !text;
  }

  function setRunStatus(run, status, content) {
    run.status = status;
    run.item.dataset.status = status;
    run.item.setAttribute("aria-busy", ACTIVE[status] ? "true" : "false");
    if (status === "queued") {
      var ahead = content && content.position ? " (" + content.position + " ahead)" : "";
      setBadge(run, "queued" + ahead, "queued");
      if (!run.text) run.body.textContent = "";
    } else if (status === "running") {
      setBadge(run, run.text ? "writing…" : "thinking…", "running");
    } else if (status === "cancelling") {
      setBadge(run, "stopping…", "cancelling");
    }
    showRunState(run);
    updateComposer();
  }

  function appendStreamText(run, text) {
    var body = run.body;
    if (body.classList.contains("markdown")) {
      body.classList.remove("markdown");
      body.classList.add("plain", "streaming");
      body.textContent = run.text;
      return;
    }
    var last = body.lastChild;
    if (last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
    else body.appendChild(document.createTextNode(text));
    if (run.badge.textContent === "thinking…") setBadge(run, "writing…", "running");
  }

  function finishRun(run, result) {
    run.status = result.status || "completed";
    run.text = result.text || "";
    if (result.messageId) {
      run.messageId = result.messageId;
      run.item.dataset.messageId = result.messageId;
    }
    if (typeof result.chunks === "number") run.nextIndex = result.chunks;
    run.item.dataset.status = run.status;
    run.item.setAttribute("aria-busy", "false");
    run.body.classList.remove("streaming");
    if (run.status === "cancelled") setBadge(run, "stopped", "cancelled");
    else if (run.status === "failed") setBadge(run, "failed", "failed");
    else setBadge(run, "");
    if (result.error && result.error.message) setRunError(run, result.error.message);
    run.prompts.forEach(function (prompt) {
      closePrompt(prompt, "The reply ended.");
    });
    if (run.status !== "completed") endToolSteps(run);
    var cached = run.messageId ? state.htmlCache.get(run.messageId) : null;
    if (cached != null) {
      showHtml(run, cached);
    } else {
      run.body.classList.remove("markdown");
      run.body.classList.add("plain");
      run.body.textContent = run.text;
      if (!run.text && run.status === "cancelled") {
        run.body.appendChild(make("em", "msg-placeholder", "Stopped before any reply."));
      } else if (!run.text && run.status === "failed") {
        run.body.appendChild(make("em", "msg-placeholder", "No reply."));
      }
      if (run.text) queueRender(run);
    }
    showReplyActions(run);
    setMessageTime(run.item, result.createdAt);
    updateComposer();
  }

  function setRunError(run, message) {
    run.error.textContent = message;
    run.error.hidden = false;
  }

  function showHtml(run, html) {
    run.body.classList.remove("plain", "streaming");
    run.body.classList.add("markdown");
    run.body.innerHTML = html; // sanitized by the server (chat/rendering.py)
    serverHtml.set(run.body, html);
    addCodeCopyButtons(run.body);
  }

  function queueRender(run) {
    if (state.streamFormat === "text") return; // shown as written
    state.renderQueue.add(run);
    if (state.renderScheduled) return;
    state.renderScheduled = true;
    setTimeout(flushRenders, 0);
  }

  function flushRenders() {
    state.renderScheduled = false;
    var runs = Array.from(state.renderQueue);
    state.renderQueue.clear();
    if (!runs.length) return;
    var texts = runs.map(function (run) { return run.text; });
    fetch(renderUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify({ texts: texts }),
    })
      .then(function (response) {
        if (!response.ok) throw new Error("render failed: " + response.status);
        return response.json();
      })
      .then(function (data) {
        runs.forEach(function (run, index) {
          var html = data.html[index];
          if (run.messageId) state.htmlCache.set(run.messageId, html);
          // Only if the run still shows this text (a reset or snapshot may have replaced it).
          if (state.runs.get(run.id) === run && FINAL[run.status] && run.text === texts[index]) {
            showHtml(run, html);
          }
        });
      })
      .catch(function () {
        /* the plain text stays: readable and safe */
      });
  }

  // --- reading: copy buttons, code blocks, timestamps -----------------------
  //
  // A finished reply gets a Copy button (its Markdown source); each code block
  // of rendered HTML gets a bar with its language and a Copy button (its
  // text). The HTML the server sent is kept apart from these additions, so a
  // snapshot redraw starts again from the server's HTML.

  var COPIED_MS = 2000;
  var serverHtml = new WeakMap(); // .msg-body -> the sanitized HTML shown in it

  function renderedHtml(body) {
    return serverHtml.has(body) ? serverHtml.get(body) : body.innerHTML;
  }

  function copyWithoutClipboardApi(text) {
    // Pages served over plain http to another host have no navigator.clipboard.
    var area = make("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyWithoutClipboardApi(text);
      });
    }
    return copyWithoutClipboardApi(text);
  }

  // A button that copies getText() and says "Copied" for a moment.
  function makeCopyButton(label, getText) {
    var button = make("button", "copy-button", "Copy");
    button.type = "button";
    button.setAttribute("aria-label", label);
    var timer = null;
    function reset() {
      button.textContent = "Copy";
      button.setAttribute("aria-label", label);
      delete button.dataset.copied;
    }
    button.addEventListener("click", function () {
      var text = getText();
      copyText(text).then(function () {
        state.lastCopied = text; // for tests and debugging (window.parleyChat)
        button.textContent = "Copied";
        button.setAttribute("aria-label", "Copied");
        button.dataset.copied = "true";
      }, function () {
        button.textContent = "Copy failed";
        button.setAttribute("aria-label", "Copy failed");
      });
      clearTimeout(timer);
      timer = setTimeout(reset, COPIED_MS);
    });
    return button;
  }

  function showReplyActions(run) {
    if (!run.text) {
      if (run.actions) run.actions.hidden = true;
      return;
    }
    if (!run.actions) {
      run.actions = make("div", "msg-actions");
      run.actions.appendChild(makeCopyButton("Copy reply", function () { return run.text; }));
      run.item.insertBefore(run.actions, run.promptBox);
    }
    run.actions.hidden = false;
  }

  function addCodeCopyButtons(body) {
    body.querySelectorAll("pre").forEach(function (pre) {
      if (pre.parentNode.classList.contains("code-block")) return;
      var code = pre.querySelector("code") || pre;
      var match = /(?:^|\s)language-(\S+)/.exec(code.className || "");
      var language = match ? match[1] : "";
      var wrapper = make("div", "code-block");
      var bar = make("div", "code-block-bar");
      bar.appendChild(make("span", "code-language", language || "code"));
      bar.appendChild(makeCopyButton(language ? "Copy " + language + " code" : "Copy code", function () {
        return code.textContent.replace(/\n$/, "");
      }));
      pre.parentNode.insertBefore(wrapper, pre);
      wrapper.appendChild(bar);
      wrapper.appendChild(pre);
    });
  }

  // A message's time: the server's timestamp, shown in the reader's locale
  // and time zone (the time today, the date too before), the whole date on hover.
  function localizeTime(time) {
    var moment = new Date(time.getAttribute("datetime"));
    if (isNaN(moment.getTime())) return;
    var now = new Date();
    var options = { hour: "2-digit", minute: "2-digit" };
    if (moment.toDateString() !== now.toDateString()) {
      options.month = "short";
      options.day = "numeric";
      if (moment.getFullYear() !== now.getFullYear()) options.year = "numeric";
    }
    time.textContent = moment.toLocaleString(undefined, options);
    time.title = moment.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  }

  function setMessageTime(item, timestamp) {
    var meta = item.querySelector(".msg-meta");
    if (!timestamp || !meta) return;
    var time = meta.querySelector("time.msg-time");
    if (!time) {
      time = make("time", "msg-time");
      meta.appendChild(time);
    }
    time.setAttribute("datetime", timestamp);
    localizeTime(time);
  }

  // --- states: what a reply's badge says, Esc to stop, focus after Stop ------
  //
  // A run's badge says what it is doing ("queued", "thinking…", "writing…");
  // over that it says "waiting for your answer" while one of its questions or
  // approvals is open, and "offline" / "reconnecting" while the socket is down
  // (the reply is not being written to this page then).

  function showRunState(run) {
    if (!ACTIVE[run.status]) return;
    var text;
    var kind;
    if (!state.open) {
      text = el.connection.dataset.state === "offline" ? "offline" : "reconnecting";
      kind = "offline";
    } else if (run.prompts.size) {
      text = canWrite() ? "waiting for your answer" : "waiting for an answer";
      kind = "waiting";
    } else if (run.status === "running") {
      text = run.text ? "writing…" : "thinking…";
      kind = "running";
    } else if (run.baseBadge) {
      text = run.baseBadge.text;
      kind = run.baseBadge.kind;
    }
    run.badge.textContent = text || "";
    run.badge.className = "badge" + (kind ? " badge-" + kind : "");
    run.badge.hidden = !text;
  }

  // Esc stops the reply being written, wherever the focus is on the page
  // (unless something else used the key: the @ list closes first).
  function stopOnEscape(event) {
    if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
    if (el.stop.hidden || el.stop.disabled) return;
    event.preventDefault();
    el.stop.click();
  }

  // After Stop (clicked, or Esc) the focus is in the composer, ready to write.
  function keepComposerFocus() {
    if (!el.input.disabled) el.input.focus();
  }

  // --- input requests --------------------------------------------------------

  // A tool call waiting for a writer's yes: Approve / Deny (writers only;
  // others see what waits and who may answer).
  function addApproval(run, request) {
    var form = make("form", "input-request approval-request");
    var headingId = "approval-" + Math.random().toString(36).slice(2);
    form.dataset.kind = "approval";
    form.dataset.inputId = request.input_id;
    form.dataset.question = request.question || "";
    form.setAttribute("aria-labelledby", headingId);
    var call = request.tool_call;
    form.dataset.agent = run.agent;
    var heading = make("p", "input-heading", run.agent + " wants to run ");
    heading.id = headingId;
    if (call) {
      form.dataset.callId = call.id || "";
      heading.appendChild(make("code", "approval-tool", call.name || "a tool"));
      form.appendChild(heading);
      form.appendChild(make("p", "tool-label", "Arguments"));
      form.appendChild(make("pre", "tool-arguments", argumentsText(call.arguments)));
      // The pending call shows among the run's steps too, waiting.
      setStepState(addToolStep(run, call), "awaiting");
    } else {
      heading.appendChild(document.createTextNode("a tool"));
      form.appendChild(heading);
      form.appendChild(make("p", "input-question", request.question));
    }
    var note = make("p", "input-note");
    var left = typeof request.seconds_left === "number" ? request.seconds_left : request.timeout;
    if (!canWrite()) {
      note.textContent = "Only the owner and participants can approve.";
    } else {
      var row = make("div", "input-row approval-buttons");
      var approve = make("button", "button button-primary", "Approve");
      approve.type = "button";
      var deny = make("button", "button button-danger", "Deny");
      deny.type = "button";
      row.appendChild(approve);
      row.appendChild(deny);
      form.appendChild(row);
      if (typeof left === "number" && left > 0) {
        note.textContent = "Without an answer within " + Math.max(1, Math.round(left)) + " s it does not run.";
      }
      var answer = function (yes) {
        if (form.dataset.answering) return;
        var sent = sendFrame({
          type: "input",
          content: { run_id: run.id, input_id: request.input_id, approve: yes },
        });
        if (sent) {
          // aria-disabled, not disabled: a disabled button would drop the focus.
          form.dataset.answering = "true";
          approve.setAttribute("aria-disabled", "true");
          deny.setAttribute("aria-disabled", "true");
          note.textContent = yes ? "Approving…" : "Denying…";
        } else {
          note.textContent = "Not connected; try again in a moment.";
        }
      };
      approve.addEventListener("click", function () { answer(true); });
      deny.addEventListener("click", function () { answer(false); });
    }
    form.appendChild(note);
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    run.prompts.set(request.input_id, form);
    run.promptBox.appendChild(form);
  }

  function addPrompt(run, request) {
    if (run.prompts.has(request.input_id)) return;
    if (request.kind === "approval") {
      addApproval(run, request);
      showRunState(run);
      return;
    }
    var form = make("form", "input-request");
    var questionId = "question-" + Math.random().toString(36).slice(2);
    var question = make("p", "input-question", request.question);
    question.id = questionId;
    var label = make("label", "visually-hidden", "Your answer");
    var field = make("input", "input-answer");
    field.type = "text";
    field.name = "answer";
    field.id = questionId + "-answer";
    field.setAttribute("aria-describedby", questionId);
    field.autocomplete = "off";
    label.htmlFor = field.id;
    var button = make("button", "button", "Answer");
    button.type = "submit";
    var note = make("p", "input-note");
    var row = make("div", "input-row");
    row.appendChild(label);
    row.appendChild(field);
    row.appendChild(button);
    form.dataset.agent = run.agent;
    form.appendChild(make("strong", "input-heading", run.agent + " asks:"));
    form.appendChild(question);
    form.appendChild(row);
    form.appendChild(note);
    if (!canWrite()) {
      field.disabled = true;
      button.disabled = true;
      note.textContent = "Participants can answer.";
    } else {
      // A snapshot says how long is left; a live request, its whole timeout.
      var left = typeof request.seconds_left === "number" ? request.seconds_left : request.timeout;
      if (typeof left === "number" && left > 0) {
        note.textContent = "Answer within " + Math.max(1, Math.round(left)) + " s.";
      }
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = field.value;
      if (!text.trim()) {
        note.textContent = "Type an answer first.";
        field.focus();
        return;
      }
      var sent = sendFrame({
        type: "input",
        content: { run_id: run.id, input_id: request.input_id, text: text },
      });
      if (sent) {
        note.textContent = "Sent.";
        field.disabled = true;
        button.disabled = true;
      } else {
        note.textContent = "Not connected; try again in a moment.";
      }
    });
    run.prompts.set(request.input_id, form);
    run.promptBox.appendChild(form);
    showRunState(run);
  }

  function closedPrompt(question, text, who) {
    var done = make("p", "input-closed");
    done.appendChild(make("strong", null, (who || agentName) + " asked: "));
    done.appendChild(document.createTextNode(question + " — " + text));
    return done;
  }

  // The questions a finished run asked (a message's `inputs`), as they ended.
  function showAskedInputs(run, inputs) {
    (inputs || []).forEach(function (asked) {
      if (run.promptBox.querySelector('[data-input-id="' + CSS.escape(asked.input_id) + '"]')) return;
      var note;
      if (asked.status === "answered" && asked.kind === "approval") {
        note = (asked.answer === "approved" ? "Approved" : "Denied")
          + (asked.answered_by ? " by " + asked.answered_by.username : "") + ".";
      } else if (asked.status === "timed_out" && asked.kind === "approval") {
        note = "Nobody approved in time: it did not run.";
      } else if (asked.status === "answered") {
        note = "Answered" + (asked.answered_by ? " by " + asked.answered_by.username : "") + ": " + (asked.answer || "");
      } else if (asked.status === "timed_out") {
        note = "No answer in time.";
      } else {
        note = "The reply ended before an answer.";
      }
      var done = closedPrompt(asked.question, note, run.agent);
      done.dataset.inputId = asked.input_id;
      run.promptBox.appendChild(done);
    });
  }

  function closePrompt(form, text) {
    var question = form.querySelector(".input-question");
    var done = closedPrompt(
      form.dataset.question != null ? form.dataset.question : (question ? question.textContent : ""), text,
      form.dataset.agent);
    if (form.dataset.inputId) done.dataset.inputId = form.dataset.inputId;
    // Focus inside the prompt (the button just pressed) moves to what replaces it.
    var hadFocus = form.contains(document.activeElement);
    form.replaceWith(done);
    if (hadFocus) {
      done.tabIndex = -1;
      done.focus();
    }
    state.runs.forEach(function (run) {
      run.prompts.forEach(function (value, key) {
        if (value === form) run.prompts.delete(key);
      });
      showRunState(run);
    });
  }

  // --- presence (shown only when the server sends it) -------------------------

  function showPresence(users) {
    el.presenceList.textContent = "";
    users.forEach(function (user) {
      var name = typeof user === "string" ? user : user.username;
      var role = typeof user === "string" ? "" : user.role;
      var item = make("li", "presence-user", name);
      if (role) item.appendChild(make("span", "presence-role", " (" + role + ")"));
      el.presenceList.appendChild(item);
    });
    el.presence.hidden = users.length === 0;
  }

  // --- composer ------------------------------------------------------------------

  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // Pages served over plain http to another host have no randomUUID.
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) {
      return (b + 0x100).toString(16).slice(1);
    }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" +
      hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function resendPending() {
    // A message sent just before the connection dropped may or may not have
    // arrived: send it again with its client_id; the server posts it at most
    // once and answers with the stored message either way.
    state.pendingSends.forEach(function (pending, requestId) {
      sendFrame({ type: "message", content: pending.text, request_id: requestId, client_id: pending.clientId });
    });
  }

  el.form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!canWrite()) return;
    var text = el.input.value;
    if (!text.trim()) {
      el.input.focus();
      return;
    }
    state.requestCounter += 1;
    var requestId = "web-" + Date.now().toString(36) + "-" + state.requestCounter;
    var clientId = newClientId();
    var sent = sendFrame({ type: "message", content: text, request_id: requestId, client_id: clientId });
    if (!sent) {
      showAlert("Not connected, so the message was not sent. It is still in the box; send it again once connected.");
      return;
    }
    state.pendingSends.set(requestId, { text: text, clientId: clientId });
    stickToBottom = true;
    scrollToBottom();
    el.input.value = "";
    el.input.focus();
  });

  // --- @ autocomplete: the thread's agents, where a mention addresses ------
  //
  // While the text before the caret is leading mentions and a partial one
  // (`@al`, `@alpha @b`), a listbox offers the agents whose names start so;
  // arrows move, Enter or Tab picks, Escape closes. The textarea keeps the
  // focus (aria-activedescendant points at the highlighted agent).

  var LEADING_PARTIAL_MENTION = /^\s*(?:@[A-Za-z0-9_-]+[,:]?\s+)*@([A-Za-z0-9_-]*)$/;
  var mention = { open: false, names: [], active: 0, start: 0, end: 0 };

  function mentionAtCaret() {
    var input = el.input;
    if (input.selectionStart !== input.selectionEnd) return null;
    var caret = input.selectionStart;
    var match = LEADING_PARTIAL_MENTION.exec(input.value.slice(0, caret));
    if (!match) return null;
    return { prefix: match[1], start: caret - match[1].length - 1, end: caret };
  }

  function closeMentions() {
    if (!el.mentions || !mention) return;
    mention.open = false;
    el.mentions.hidden = true;
    el.mentions.textContent = "";
    el.input.removeAttribute("aria-activedescendant");
  }

  function highlightMention(index) {
    mention.active = (index + mention.names.length) % mention.names.length;
    Array.prototype.forEach.call(el.mentions.children, function (option, place) {
      option.setAttribute("aria-selected", place === mention.active ? "true" : "false");
    });
    el.input.setAttribute("aria-activedescendant", "mention-option-" + mention.active);
  }

  function updateMentions() {
    if (!el.mentions) return;
    var found = canWrite() ? mentionAtCaret() : null;
    var prefix = found ? found.prefix.toLowerCase() : "";
    var names = found ? state.agents.filter(function (name) {
      return name.toLowerCase().indexOf(prefix) === 0;
    }) : [];
    if (!names.length) {
      closeMentions();
      return;
    }
    mention.names = names;
    mention.start = found.start;
    mention.end = found.end;
    el.mentions.textContent = "";
    names.forEach(function (name, index) {
      var option = make("li", "mention-option");
      option.id = "mention-option-" + index;
      option.setAttribute("role", "option");
      option.dataset.name = name;
      option.appendChild(makeAvatar(name, false));
      option.appendChild(make("span", "mention-name", "@" + name));
      if (index === 0 && name === state.agents[0]) option.appendChild(make("span", "mention-note", "default"));
      // mousedown, not click: the textarea keeps the focus and the caret.
      option.addEventListener("mousedown", function (event) {
        event.preventDefault();
        pickMention(name);
      });
      el.mentions.appendChild(option);
    });
    mention.open = true;
    el.mentions.hidden = false;
    highlightMention(0);
  }

  function pickMention(name) {
    var value = el.input.value;
    var rest = value.slice(mention.end).replace(/^\s+/, "");
    var inserted = "@" + name + " ";
    el.input.value = value.slice(0, mention.start) + inserted + rest;
    var caret = mention.start + inserted.length;
    el.input.setSelectionRange(caret, caret);
    closeMentions();
    el.input.focus();
  }

  // True when the key was the autocomplete's (it then does nothing else).
  function mentionKey(event) {
    if (!mention.open || event.isComposing) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      highlightMention(mention.active + (event.key === "ArrowDown" ? 1 : -1));
    } else if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") {
      pickMention(mention.names[mention.active]);
    } else if (event.key === "Escape") {
      closeMentions();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  el.input.addEventListener("input", updateMentions);
  el.input.addEventListener("click", updateMentions);
  el.input.addEventListener("blur", closeMentions);

  el.input.addEventListener("keydown", function (event) {
    if (mentionKey(event)) return;
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    event.preventDefault();
    if (typeof el.form.requestSubmit === "function") el.form.requestSubmit();
    else el.form.dispatchEvent(new Event("submit", { cancelable: true }));
  });

  // --- agent teams: who has the floor; Stop ends the whole chain -------------
  // (docs/protocol.md, "Agent teams"). `status` `team` frames say who speaks
  // and which turn; a turn's `running` status says it too (a chain opened
  // behind other runs is announced by its first turn's `running`).
  var team = {
    policy: root.dataset.teamPolicy || "",
    maxTurns: parseInt(root.dataset.teamMaxTurns, 10) || 6,
    turns: new Map(), // run id -> its turn
    active: false, // a chain is going: Stop ends all of it
  };

  function teamFromConfig(config) {
    team.policy = config && config.policy ? config.policy : "";
    team.maxTurns = (config && config.max_turns) || 6;
    if (!team.policy) showFloor("", false);
  }

  function showFloor(text, ended) {
    if (!el.floor) return;
    el.floor.textContent = text;
    el.floor.hidden = !text;
    el.floor.dataset.ended = ended ? "true" : "false";
  }

  function onTeamStatus(frame, content) {
    team.policy = content.policy;
    team.maxTurns = content.max_turns;
    if (content.ended) {
      team.active = false;
      showFloor(content.text, true);
    } else {
      team.active = content.speaker !== "human";
      if (frame.run_id && team.active) team.turns.set(frame.run_id, content.turn);
      showFloor(content.text, false);
    }
    if (el.floor) el.floor.dataset.speaker = content.speaker || "";
  }

  function floorOnRunning(frame) {
    if (!team.policy || !frame.agent) return;
    var turn = team.turns.get(frame.run_id) || 1;
    team.active = true;
    showFloor(frame.agent + " has the floor (turn " + turn + " of " + team.maxTurns + ")", false);
    if (el.floor) el.floor.dataset.speaker = frame.agent;
  }

  function floorFromSnapshot(content) {
    if (!team.policy) return;
    var going = (content.runs || []).filter(function (run) { return run.status === "running"; });
    if (going.length) floorOnRunning({ run_id: going[0].run_id, agent: going[0].agent });
  }

  el.stop.addEventListener("click", function () {
    var running = null;
    state.runs.forEach(function (run) {
      if (run.status === "running") running = run;
    });
    // In a team, the thread's current turn, whichever it is by now: the
    // chain ends with it (a run_id could name a turn that just ended).
    var content = running ? { run_id: running.id } : null;
    if (team.active) content = { reason: "Stopped the team" };
    if (!sendFrame({ type: "cancel", content: content })) {
      showAlert("Not connected, so the reply could not be stopped. Try again in a moment.");
    }
  });

  el.stop.addEventListener("click", keepComposerFocus);
  document.addEventListener("keydown", stopOnEscape);

  // --- lifecycle -------------------------------------------------------------------

  window.addEventListener("online", function () {
    if (!state.socket && !state.stopped) {
      state.attempt = 0;
      connect();
    }
  });
  window.addEventListener("offline", function () {
    if (state.stopped) return;
    detachSocket();
    clearTimeout(state.reconnectTimer);
    setConnection("offline", "Offline — waiting for the network");
  });

  // Start at the newest message, avatars painted, times in the reader's zone.
  repaintAvatars();
  el.list.querySelectorAll("time.msg-time").forEach(localizeTime);
  scrollToBottom();
  updateComposer();
  connect();

  // For tests and debugging: the current state, and a way to simulate a blip.
  window.parleyChat = {
    state: state,
    dropConnection: function () {
      if (state.socket) state.socket.close();
    },
  };
})();
