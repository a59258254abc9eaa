// The operator chat (admin/console/chat.html): sends through the API's own SSE endpoint
// with the admin session (CSRF-checked), draws the reply as it streams, then redraws the
// log from the server (citations, tool calls, branch buttons). Branching uses the API's
// branch endpoint and opens the new conversation.
"use strict";

(function () {
  const form = document.getElementById("chat-form");
  const log = document.getElementById("chat-log");
  if (!form || !log) return;
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const input = document.getElementById("chat-input");
  const statusLine = document.getElementById("chat-status");
  const send = document.getElementById("chat-send");

  function say(text) {
    if (statusLine) statusLine.textContent = text;
  }

  function bubble(role, text) {
    const empty = log.querySelector(".chat-empty");
    if (empty) empty.remove();
    const box = document.createElement("div");
    box.className = "chat-message " + role;
    box.dataset.role = role;
    const meta = document.createElement("div");
    meta.className = "chat-meta";
    meta.textContent = role;
    const content = document.createElement("div");
    content.className = "chat-content";
    content.textContent = text;
    box.append(meta, content);
    log.append(box);
    log.scrollTop = log.scrollHeight;
    return box;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  async function refresh() {
    // The server's rendering of the log is the one source of truth once a turn is stored.
    const page = await fetch(window.location.href, { credentials: "same-origin" });
    if (!page.ok) return;
    const html = new DOMParser().parseFromString(await page.text(), "text/html");
    const fresh = html.getElementById("chat-log");
    if (fresh) {
      log.replaceChildren(...fresh.childNodes);
      log.scrollTop = log.scrollHeight;
    }
  }

  function handle(name, data, reply) {
    const content = reply.querySelector(".chat-content");
    if (name === "delta") {
      content.textContent += data.content;
      log.dataset.deltas = String(Number(log.dataset.deltas || 0) + 1);
      log.scrollTop = log.scrollHeight;
    } else if (name === "start") {
      reply.dataset.messageId = data.assistant_message_id;
      say("Streaming…");
    } else if (name === "tool_call") {
      const tool = document.createElement("div");
      tool.className = "chat-tool";
      tool.dataset.callId = data.id;
      tool.textContent = "tool " + data.name + "(" + JSON.stringify(data.args) + ") …";
      reply.insertBefore(tool, content);
    } else if (name === "tool_result") {
      const tool = reply.querySelector('.chat-tool[data-call-id="' + CSS.escape(data.id) + '"]');
      if (tool) {
        const outcome = data.error ? "error: " + data.error : JSON.stringify(data.result);
        tool.textContent = tool.textContent.replace(/ …$/, "") + " → " + outcome;
      }
    } else if (name === "approval_required") {
      say("Waiting for approval of " + data.name + " (Tool approvals in the admin).");
    } else if (name === "done") {
      say("Done: " + data.status + ", " + data.usage.tokens_in + "+" + data.usage.tokens_out +
          " tokens" + (data.latency_ms !== null ? ", " + data.latency_ms + " ms" : ""));
    } else if (name === "error") {
      reply.classList.add("error");
      say("Error: " + data.error.message);
    }
  }

  async function stream(text) {
    log.dataset.deltas = "0";
    bubble("user", text);
    const reply = bubble("assistant", "");
    const response = await fetch(form.dataset.streamUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "text/event-stream" },
      body: JSON.stringify({ content: text }),
    });
    if (!response.ok) {
      reply.classList.add("error");
      say("Refused: " + (await errorOf(response)));
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) handle(name, JSON.parse(data.join("\n")), reply);
      }
    }
    await refresh();
  }

  if (input) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      send.disabled = true;
      try {
        await stream(text);
      } catch (e) {
        say("The stream failed: " + e);
      } finally {
        send.disabled = false;
        input.focus();
      }
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }

  log.addEventListener("click", async (event) => {
    const button = event.target.closest(".chat-branch");
    if (!button) return;
    button.disabled = true;
    say("Branching…");
    const response = await fetch(form.dataset.branchUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ message_id: button.dataset.messageId }),
    });
    if (!response.ok) {
      button.disabled = false;
      say("Branch refused: " + (await errorOf(response)));
      return;
    }
    const branch = await response.json();
    window.location.assign(form.dataset.chatUrlTemplate.replace("00000000-0000-0000-0000-000000000000", branch.id));
  });
})();
