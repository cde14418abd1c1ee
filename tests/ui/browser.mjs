// The conflict page in Chromium, driven by crates/cli/tests/ui_browser.rs, which starts the
// simulator, a hub with its bridge, Rita's device serving the page and Carl's device, and
// passes them here through the environment. Exits non-zero on the first failed check.
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through scripts/ui-tests.sh)`);
  return v;
};
const link = env("SELLSYNC_UI");
const base = link.split("/?token=")[0];
const deal = env("DEAL");
const title = env("DEAL_TITLE");
const rita = env("RITA_NAME");
const carl = env("CARL_NAME");
const theirStage = env("THEIR_STAGE");
const shots = env("SHOTS");
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const CHROMIUM = "/usr/bin/chromium";
let failures = 0;
function check(what, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok || !detail ? "" : `: ${detail}`}`);
  if (!ok) failures += 1;
}

// Carl edits the deal on his device and syncs: a change Rita's page must learn of.
function carlSets(field) {
  const bin = env("SELLSYNC_BIN");
  const store = env("CARL_STORE");
  execFileSync(bin, ["device", "--store", store, "set", deal, field]);
  execFileSync(bin, ["device", "--store", store, "sync"]);
}

// Polls `f` until it is true, for at most 30 s.
async function until(f) {
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    if (await f()) return true;
    await new Promise((r) => setTimeout(r, 300));
  }
  return false;
}

async function axe(page, name) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () => await window.axe.run(document));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(`${name}: no serious or critical accessibility violations`, bad.length === 0,
    bad.map((v) => `${v.id} (${v.nodes.length}): ${v.help}`).join("; "));
}

async function noHorizontalScroll(page, name) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(`${name}: no horizontal scroll at ${width} px`, scroll <= width, `scroll width ${scroll}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  // bypassCSP: axe is injected as an inline script, which the page's policy refuses.
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
  const page = await desktop.newPage();
  page.setDefaultTimeout(30_000);

  // The link's token opens the inbox.
  await page.goto(link);
  check("the link opens the inbox", new URL(page.url()).pathname === "/inbox", page.url());
  const inbox = await page.textContent("main");
  check("the inbox names the deal", inbox.includes(title), inbox);
  check("the inbox counts two conflicts", inbox.includes("2 open conflicts in 1 record"), inbox);
  check("the inbox says what they are about",
    inbox.includes("Value was changed in two places") && inbox.includes("Stage was changed in two places"), inbox);
  await axe(page, "inbox");
  await page.screenshot({ path: `${shots}/inbox-desktop.png`, fullPage: true });

  // The record page: base, yours, theirs, by name.
  await page.click(`li.row[data-record="${deal}"] a`);
  await page.waitForURL(`**/record/${deal}`);
  const valueSection = page.locator("section.conflict", { hasText: "Value was changed" });
  const text = await valueSection.textContent();
  check("the value conflict shows the base", text.includes("Base"), text);
  check("…Rita's value and Carl's", text.includes("1500.00") && text.includes("1200.00"), text);
  check("…who wrote each, by name", text.includes(rita) && text.includes(carl), text);
  check("…which device", text.includes("carl-laptop") && text.includes("rita-phone"), text);
  const stageText = await page.locator("section.conflict", { hasText: "Stage was changed" }).textContent();
  check("the stage conflict names the stages", stageText.includes(theirStage), stageText);
  check("the money input refuses three decimals",
    await page.locator("#v-value").evaluate((el) => { el.value = "1350.001"; const bad = !el.checkValidity(); el.value = ""; return bad; }));
  await axe(page, "record page");
  await page.screenshot({ path: `${shots}/record-desktop.png`, fullPage: true });

  // Phone width: both pages fit, no horizontal scroll.
  const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, bypassCSP: true });
  const small = await phone.newPage();
  await small.goto(link);
  await noHorizontalScroll(small, "inbox");
  await axe(small, "inbox at phone width");
  await small.screenshot({ path: `${shots}/inbox-phone.png`, fullPage: true });
  await small.goto(`${base}/record/${deal}`);
  await noHorizontalScroll(small, "record page");
  await small.screenshot({ path: `${shots}/record-phone.png`, fullPage: true });
  await phone.close();

  // The hub's dashboard, in the same browser: who must decide, the bridge, the devices. Its
  // cookie must not log the device's page out (one cookie jar per host, not per port).
  const board = await desktop.newPage();
  await board.goto(env("SELLSYNC_DASHBOARD"));
  check("the dashboard link opens the dashboard", new URL(board.url()).pathname === "/dashboard", board.url());
  const boardText = await board.textContent("main");
  check("the dashboard counts the open conflicts", boardText.includes("2 open conflicts"), boardText);
  check("…names who must decide", boardText.includes(rita) && boardText.includes(carl), boardText);
  check("…says Zendesk answers", boardText.includes("answers"), boardText);
  check("…lists both devices with their last sync",
    boardText.includes("rita-phone") && boardText.includes("carl-laptop") && !boardText.includes("never"), boardText);
  await axe(board, "dashboard");
  await board.screenshot({ path: `${shots}/dashboard-desktop.png`, fullPage: true });
  const back = await desktop.request.get(`${base}/inbox`, { maxRedirects: 0 });
  check("the device's page still opens after the dashboard's", back.status() === 200, String(back.status()));
  await board.close();
  const phoneBoard = await (await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, bypassCSP: true })).newPage();
  await phoneBoard.goto(env("SELLSYNC_DASHBOARD"));
  await noHorizontalScroll(phoneBoard, "dashboard");
  await axe(phoneBoard, "dashboard at phone width");
  await phoneBoard.context().close();

  // Live: Carl renames the deal on his device; the open page shows it without a reload.
  await page.waitForFunction(() => document.body.dataset.live === "1");
  carlSets(`name=${title} (renamed by Carl)`);
  await page.waitForFunction(() => document.querySelector("h1").textContent.includes("(renamed by Carl)"),
    null, { timeout: 30_000 });
  check("a sync's change appears on the open page without a reload", true);

  // Changed while you looked: Rita types a value; before she submits, a colleague sets the
  // value in Zendesk, and the bridge brings it to the hub and the page's sync to Rita.
  await page.fill("#v-value", "1300.00");
  const put = await fetch(`${env("CRM_URL")}/v2/deals/${env("CRM_ID")}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${env("CRM_TOKEN")}`, "Content-Type": "application/json" },
    body: JSON.stringify({ data: { value: 1290 } }),
  });
  check("the colleague's Zendesk edit is taken", put.ok, String(put.status));
  const arrived = await until(async () => {
    const r = await page.request.get(`${base}/record/${deal}`);
    return (await r.text()).includes("1290.00");
  });
  check("the Zendesk value reaches Rita's device as a third candidate", arrived);
  const typed = await page.inputValue("#v-value");
  check("the page kept what Rita was typing", typed === "1300.00", typed);
  await page.click("section.conflict:has-text('Value was changed') button[value=value]");
  const banner = await page.textContent("main");
  check("a decision on old candidates is refused: changed while you looked",
    banner.includes("This changed while you looked"), banner);
  check("…and the new candidate is shown", banner.includes("1290.00"), banner);

  // The merged value, typed.
  await page.fill("#v-value", "1350.00");
  await page.click("section.conflict:has-text('Value was changed') button[value=value]");
  const after = await page.textContent("main");
  check("a typed value settles the value conflict",
    after.includes("Done") && !after.includes("Value was changed in two places"), after);
  check("…and the history shows it, by name", after.includes("1350.00") && after.includes(`decided by ${rita}`), after);

  // The keyboard only: j to the stage conflict, t to take theirs.
  await page.keyboard.press("j");
  const focused = await page.evaluate(() => document.activeElement?.dataset?.kind ?? "");
  check("j focuses the next conflict", focused === "field", focused);
  await Promise.all([page.waitForNavigation(), page.keyboard.press("t")]);
  const done = await page.textContent("main");
  check("t takes theirs", done.includes("No open conflicts on this record"), done);
  await page.goto(`${base}/inbox`);
  check("the inbox is empty", (await page.textContent("main")).includes("Nothing to decide"));

  // Refusals: no token, a foreign origin.
  const stranger = await browser.newContext();
  const resp = await (await stranger.newPage()).goto(`${base}/inbox`);
  check("a request without the token is refused", resp.status() === 401, String(resp.status()));
  await stranger.close();
  const forged = await desktop.request.post(`${base}/record/${deal}/discard`, {
    headers: { Origin: "http://evil.example" },
    maxRedirects: 0,
  });
  check("a change from a foreign origin is refused", forged.status() === 403, String(forged.status()));
} finally {
  await browser.close();
}
if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log("every check passed");
