// Lets `import ... from "./client.mjs"` find the declarations in client.d.ts.
export * from "./client.js";
