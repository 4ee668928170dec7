// Talks to Parley's AI SDK endpoint with the `ai` package, as useChat does:
// DefaultChatTransport posts the chat and reads the UI message stream,
// readUIMessageStream assembles the assistant message; with "hangUpAfter" it
// aborts the first request after that many text deltas (a page reload
// mid-reply) and resumes with reconnectToStream, as useChat({resume: true})
// does on load. Prints one JSON line with what arrived.
//
//   node aisdk_chat.mjs '{"api": ".../api/aisdk/echo", "token": "...",
//                         "chatId": "...", "text": "hello", "hangUpAfter": 2}'
import { DefaultChatTransport, readUIMessageStream } from "ai";

const config = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({
  api: config.api,
  headers: { Authorization: `Bearer ${config.token}` },
});

// The assistant message a stream builds, with the chunks that built it.
async function read(stream, { stopAfterDeltas } = {}) {
  const chunks = [];
  const errors = [];
  let deltas = 0;
  let aborted = false;
  const tee = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk);
        controller.enqueue(chunk);
        if (chunk.type === "text-delta") deltas += 1;
        if (stopAfterDeltas && deltas >= stopAfterDeltas && !aborted) {
          aborted = true;
          controller.terminate();
        }
      },
    }),
  );
  let message = null;
  for await (const snapshot of readUIMessageStream({
    stream: tee,
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
  }
  const text = message
    ? message.parts.filter((part) => part.type === "text").map((part) => part.text).join("")
    : "";
  return { chunks, errors, message, text };
}

const out = { chatId: config.chatId };
const controller = new AbortController();
const stream = await transport.sendMessages({
  trigger: "submit-message",
  chatId: config.chatId,
  messageId: undefined,
  messages: [
    { id: `user-${Date.now()}`, role: "user", parts: [{ type: "text", text: config.text }] },
  ],
  abortSignal: controller.signal,
});
if (config.hangUpAfter) {
  out.first = await read(stream, { stopAfterDeltas: config.hangUpAfter });
  controller.abort(); // hang up, as a reload does
  const resumed = await transport.reconnectToStream({ chatId: config.chatId });
  out.resumed = resumed === null ? null : await read(resumed);
} else {
  out.first = await read(stream);
}
// The run is over: resuming now finds nothing (204 -> null).
const after = await transport.reconnectToStream({ chatId: config.chatId });
out.afterEnd = after === null ? null : await read(after);
console.log(JSON.stringify(out));
