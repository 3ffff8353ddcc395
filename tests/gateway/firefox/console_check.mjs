// The samsvc web console in Firefox, driven over WebDriver BiDi by puppeteer-core (no browser
// download: Debian's firefox-esr). Usage: node console_check.mjs BASE_URL API_KEY IMAGE_PATH
// Prints one JSON line: what the page showed, and every script or console error.
import puppeteer from "puppeteer-core";

const [base, key, image] = process.argv.slice(2);
const report = { errors: [], masks: null, answers: null, prompt: null, outside: [] };
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
  args: ["--no-remote"],
  extraPrefsFirefox: { "network.proxy.type": 0, "browser.shell.checkDefaultBrowser": false },
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.on("pageerror", (error) => report.errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !/401|Unauthorized/.test(message.text())) report.errors.push(`console: ${message.text()}`);
  });
  page.on("request", (request) => { if (!request.url().startsWith(base)) report.outside.push(request.url()); });
  await page.goto(`${base}/`);
  await page.waitForSelector("#notice:not([hidden])", { timeout: 30000 });
  report.prompt = await page.$eval("#notice", (e) => e.textContent);
  await page.type("#api-key", key);
  await page.$eval("#api-key", (e) => e.dispatchEvent(new Event("change")));
  await page.waitForFunction(() => document.querySelector("#model").options.length > 0, { timeout: 30000 });
  for (const [field, value] of Object.entries({ pps: "4", iou: "0", stability: "0", nms: "1" })) {
    await page.$eval(`#${field}`, (e, v) => { e.value = v; }, value);
  }
  const input = await page.$("#file");
  await input.uploadFile(image);
  await page.waitForFunction(() => !document.querySelector("#run-segment").disabled, { timeout: 30000 });
  await page.click("#run-segment");
  await page.waitForSelector("#segment-status[data-masks]", { timeout: 120000 });
  report.masks = await page.$$eval("#mask-list li", (items) => items.length);
  await page.click("#tab-click");
  const canvas = await page.$("#click-canvas");
  const box = await canvas.boundingBox();
  await page.mouse.click(box.x + box.width / 3, box.y + box.height / 3);
  await page.waitForSelector("#click-status[data-answers]", { timeout: 60000 });
  report.answers = await page.$$eval("#choices button", (items) => items.length);
  await page.screenshot({ path: process.env.SCREENSHOT || "/tmp/console-firefox.png" });
} catch (error) {
  report.errors.push(`driver: ${error.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
