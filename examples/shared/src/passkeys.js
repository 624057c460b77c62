// The demo's passkey ceremonies (WebAuthn), served at /static/passkeys.js.
// No dependency and nothing inline: the page's Content-Security-Policy
// allows scripts from the demo only, and fetches to it only.
//
// * /account, form #passkey-add: POST /api/passkeys/register/start with
//   the proof, navigator.credentials.create, POST .../register/finish;
//   then /account (or the recovery codes, shown once).
// * /login: button #passkey-signin, and passkey autofill on the user-name
//   field (autocomplete="username webauthn", conditional mediation);
//   /login/mfa: button #passkey-mfa. POST /api/login/passkey/start,
//   navigator.credentials.get, POST /api/login/passkey/finish; then the
//   button's data-next (a same-origin path), /account by default.
(() => {
  "use strict";

  const byId = (id) => document.getElementById(id);

  // base64url (padded or not) -> ArrayBuffer.
  const toBuffer = (text) => {
    const base64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  };

  // ArrayBuffer (or a view of one) -> unpadded base64url.
  const toBase64url = (data) => {
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  // A deep copy of the options without null members (the browser wants
  // them absent, not null).
  const withoutNulls = (value) => {
    if (Array.isArray(value)) {
      return value.map(withoutNulls);
    }
    if (value === null || typeof value !== "object") {
      return value;
    }
    const copy = {};
    for (const [key, member] of Object.entries(value)) {
      if (member !== null && member !== undefined) {
        copy[key] = withoutNulls(member);
      }
    }
    return copy;
  };

  const descriptors = (list) =>
    Array.isArray(list) ? list.map((c) => ({ ...c, id: toBuffer(c.id) })) : undefined;

  // The server's {"publicKey": ...} creation options, for credentials.create.
  const creationOptions = (options) => {
    const publicKey = withoutNulls(options.publicKey);
    publicKey.challenge = toBuffer(publicKey.challenge);
    publicKey.user = { ...publicKey.user, id: toBuffer(publicKey.user.id) };
    if (publicKey.excludeCredentials) {
      publicKey.excludeCredentials = descriptors(publicKey.excludeCredentials);
    }
    return publicKey;
  };

  // The server's {"publicKey": ...} request options, for credentials.get.
  const requestOptions = (options) => {
    const publicKey = withoutNulls(options.publicKey);
    publicKey.challenge = toBuffer(publicKey.challenge);
    if (publicKey.allowCredentials) {
      publicKey.allowCredentials = descriptors(publicKey.allowCredentials);
    }
    return publicKey;
  };

  // A PublicKeyCredential (created or asserted) as JSON for the server.
  const credentialJson = (credential) => {
    const response = credential.response;
    const json = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: { clientDataJSON: toBase64url(response.clientDataJSON) },
      extensions:
        typeof credential.getClientExtensionResults === "function"
          ? credential.getClientExtensionResults()
          : {},
    };
    if (response.attestationObject) {
      json.response.attestationObject = toBase64url(response.attestationObject);
      if (typeof response.getTransports === "function") {
        json.response.transports = response.getTransports();
      }
    }
    if (response.authenticatorData) {
      json.response.authenticatorData = toBase64url(response.authenticatorData);
      json.response.signature = toBase64url(response.signature);
      json.response.userHandle = response.userHandle
        ? toBase64url(response.userHandle)
        : null;
    }
    return json;
  };

  // POSTs `body` as JSON (same origin: the session cookie goes along);
  // the JSON answer, or an Error with the server's message.
  const post = async (path, body) => {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (!response.ok) {
      const message = answer && answer.error ? answer.error : `request failed (${response.status})`;
      throw new Error(message);
    }
    return answer;
  };

  const showError = (message) => {
    const line = byId("passkey-error");
    if (line) {
      line.textContent = message;
      line.hidden = false;
    }
  };

  const clearError = () => {
    const line = byId("passkey-error");
    if (line) {
      line.textContent = "";
      line.hidden = true;
    }
  };

  // A readable message for a failed ceremony; null when there is nothing
  // to say (the user's own abort).
  const describe = (error) => {
    switch (error && error.name) {
      case "AbortError":
        return null;
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out.";
      case "InvalidStateError":
        return "This device already holds a passkey for this account.";
      case "SecurityError":
        return "Passkeys do not work at this address (open the demo at http://localhost).";
      case "NotSupportedError":
        return "This device offers no suitable passkey.";
      default:
        return (error && error.message) || "Something went wrong with the passkey.";
    }
  };

  // A same-origin path to go to, /account otherwise.
  // The server's rule (auth_core::web::safe_next): a same-origin path, no
  // `//host` or `/\host`, no backslash or control character anywhere
  // (browsers drop a tab or newline, so `/<tab>/evil` would be `//evil`).
  const safeNext = (path) =>
    typeof path === "string" &&
    path.startsWith("/") &&
    !path.startsWith("//") &&
    path.length <= 2048 &&
    !/[\\\u0000-\u001f\u007f-\u009f]/.test(path)
      ? path
      : "/account";

  const supported = () =>
    typeof window.PublicKeyCredential === "function" &&
    !!navigator.credentials &&
    typeof navigator.credentials.get === "function";

  // ---- Sign-in: /login (button and autofill), /login/mfa (button) ----

  let conditional = null; // the autofill request's AbortController
  let pendingStart = Promise.resolve(); // its start request, while in flight

  const finishSignIn = async (credential, next) => {
    // The login form's "Keep me signed in" box, sent beside the credential.
    const remember = document.getElementById("remember");
    const body = credentialJson(credential);
    if (remember && remember.checked) {
      body.remember = true;
    }
    const answer = await post("/api/login/passkey/finish", body);
    if (answer && answer.mfa_required) {
      window.location.assign(`/login/mfa?next=${encodeURIComponent(next)}`);
    } else {
      window.location.assign(next);
    }
  };

  const signInWithButton = async (button) => {
    const next = safeNext(button.dataset.next);
    clearError();
    if (conditional) {
      conditional.abort();
      conditional = null;
    }
    // One ceremony per session: let the autofill's start land first.
    await pendingStart.catch(() => undefined);
    button.disabled = true;
    try {
      const options = await post("/api/login/passkey/start", {});
      const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
      if (!credential) {
        throw new Error("No passkey was chosen.");
      }
      await finishSignIn(credential, next);
    } catch (error) {
      const message = describe(error);
      if (message) {
        showError(message);
      }
      // Offer the autofill again.
      startAutofill();
    } finally {
      button.disabled = false;
    }
  };

  // Passkey autofill on the user-name field: the browser offers this
  // site's passkeys among its suggestions.
  const autofill = async (input) => {
    if (typeof PublicKeyCredential.isConditionalMediationAvailable !== "function") {
      return;
    }
    const controller = new AbortController();
    conditional = controller;
    try {
      if (!(await PublicKeyCredential.isConditionalMediationAvailable())) {
        return;
      }
      if (controller.signal.aborted) {
        return;
      }
      const start = post("/api/login/passkey/start", {});
      pendingStart = start;
      let options;
      try {
        options = await start;
      } catch (_) {
        return; // autofill is a convenience: the forms still work
      }
      if (controller.signal.aborted) {
        return;
      }
      const next = safeNext((byId("passkey-signin") || input).dataset.next);
      const credential = await navigator.credentials.get({
        publicKey: requestOptions(options),
        mediation: "conditional",
        signal: controller.signal,
      });
      if (credential) {
        await finishSignIn(credential, next);
      }
    } catch (error) {
      if (!controller.signal.aborted && error && error.name !== "NotAllowedError") {
        const message = describe(error);
        if (message) {
          showError(message);
        }
      }
    } finally {
      if (conditional === controller) {
        conditional = null;
      }
    }
  };

  const startAutofill = () => {
    const username = document.querySelector('input[autocomplete~="webauthn"]');
    if (username && !conditional) {
      autofill(username).catch(() => undefined);
    }
  };

  // ---- Adding a passkey: /account ----

  const showRecoveryCodes = (codes) => {
    const list = byId("passkey-recovery-codes");
    const section = byId("passkey-recovery");
    if (!list || !section) {
      window.location.assign("/account");
      return;
    }
    list.replaceChildren(
      ...codes.map((code) => {
        const item = document.createElement("li");
        const text = document.createElement("code");
        text.textContent = code;
        item.append(text);
        return item;
      }),
    );
    section.hidden = false;
    section.scrollIntoView();
  };

  const addPasskey = async (form) => {
    const button = form.querySelector("button");
    const password = byId("passkey-password");
    const code = byId("passkey-code");
    const name = byId("passkey-name");
    clearError();
    if (button) {
      button.disabled = true;
    }
    try {
      const proof = { password: password ? password.value : "" };
      if (code && code.value.trim() !== "") {
        proof.code = code.value.trim();
      }
      const options = await post("/api/passkeys/register/start", proof);
      if (password) {
        password.value = "";
      }
      if (code) {
        code.value = "";
      }
      const credential = await navigator.credentials.create({
        publicKey: creationOptions(options),
      });
      if (!credential) {
        throw new Error("No passkey was created.");
      }
      const added = await post("/api/passkeys/register/finish", {
        name: name ? name.value : "",
        credential: credentialJson(credential),
      });
      if (added && Array.isArray(added.recovery_codes) && added.recovery_codes.length > 0) {
        form.hidden = true;
        showRecoveryCodes(added.recovery_codes);
      } else {
        window.location.assign("/account");
      }
    } catch (error) {
      const message = describe(error);
      if (message) {
        showError(message);
      }
    } finally {
      if (button) {
        button.disabled = false;
      }
    }
  };

  // ---- Wiring: listeners on elements found by id / data attribute ----

  const start = () => {
    const addForm = byId("passkey-add");
    const buttons = document.querySelectorAll("[data-passkey-signin]");
    if (!supported()) {
      if (addForm) {
        showError("This browser does not support passkeys.");
      }
      return;
    }
    if (addForm) {
      addForm.hidden = false;
      addForm.addEventListener("submit", (event) => {
        event.preventDefault();
        addPasskey(addForm);
      });
    }
    for (const button of buttons) {
      button.hidden = false;
      button.addEventListener("click", (event) => {
        event.preventDefault();
        signInWithButton(button);
      });
    }
    startAutofill();
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
