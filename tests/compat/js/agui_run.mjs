// Runs an agent on Parley's AG-UI endpoint with @ag-ui/client's HttpAgent and
// prints, as one JSON line, what the client received: every event (type and
// the fields a test checks), the assistant text it assembled, its messages.
//
//   node agui_run.mjs '{"url": ".../api/agui/echo", "token": "...",
//                       "threadId": "...", "texts": ["hello", "again"]}'
//
// Each text is one run (runAgent) on the same agent, so the same threadId.
import { HttpAgent } from "@ag-ui/client";

const config = JSON.parse(process.argv[2]);
const agent = new HttpAgent({
  url: config.url,
  headers: { Authorization: `Bearer ${config.token}` },
  ...(config.threadId ? { threadId: config.threadId } : {}),
});

const runs = [];
for (const [index, text] of config.texts.entries()) {
  const events = [];
  let error = null;
  agent.addMessage({ id: `user-${index}-${Date.now()}`, role: "user", content: text });
  try {
    await agent.runAgent({}, {
      onEvent({ event }) {
        events.push(event);
      },
    });
  } catch (caught) {
    error = String(caught?.message ?? caught);
  }
  const assistant = agent.messages.filter((message) => message.role === "assistant");
  runs.push({
    events,
    error,
    lastAssistantText: assistant.length ? assistant[assistant.length - 1].content ?? "" : null,
  });
}
console.log(JSON.stringify({ threadId: agent.threadId, runs, messages: agent.messages, state: agent.state }));
