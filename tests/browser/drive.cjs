// Loads the page in headless Chromium (Debian's, never a downloaded one) with playwright-core,
// waits for its answers and prints them as JSON. Usage: node drive.cjs NODE_MODULES_DIR URL CHROMIUM
const { chromium } = require(require("path").join(process.argv[2], "playwright-core"));

(async () => {
  const browser = await chromium.launch({
    executablePath: process.argv[4], headless: true,
    args: ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader"],
  });
  try {
    const page = await browser.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e}`));
    await page.goto(process.argv[3]);
    await page.waitForFunction(() => window.__result || window.__error, null, { timeout: 240000 });
    const [result, error] = await page.evaluate(() => [window.__result, window.__error]);
    if (error) throw new Error(`${error}\n${logs.join("\n")}`);
    process.stdout.write(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => { process.stderr.write(String(e.stack || e) + "\n"); process.exit(1); });
