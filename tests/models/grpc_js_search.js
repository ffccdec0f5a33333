// Search a lookalike server from Node's grpc-js, as a JavaScript backend would:
// node grpc_js_search.js PROTO TARGET IMAGE [all]
// prints the response as JSON (longs as strings, enums as names, bytes dropped).
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const fs = require("fs");

const [proto, target, image, faces] = process.argv.slice(2);
const definition = loader.loadSync(proto, { keepCase: true, longs: String, enums: String, defaults: true });
const { SearchService } = grpc.loadPackageDefinition(definition).lookalike.v1;
const client = new SearchService(target, grpc.credentials.createInsecure());
const request = { image: fs.readFileSync(image), k: 2 };
if (faces === "all") request.faces = { mode: "FACE_MODE_ALL" };
client.Search(request, { deadline: Date.now() + 60000 }, (error, response) => {
  if (error) {
    console.error(`${error.code} ${error.details}`);
    process.exit(1);
  }
  console.log(JSON.stringify(response, (key, value) => (key === "thumbnail_jpeg" ? undefined : value)));
  client.close();
});
