"""An MCP server with the fixtures the official conformance suite's server scenarios ask for
(npm ``@modelcontextprotocol/conformance``, ``conformance list --server``: each scenario says
what it calls and what it expects back), on the official Python SDK, Streamable HTTP at
``/mcp`` on 127.0.0.1, with sessions and event streams.

    python tests/mcp_conformance_server.py --port 8000

The tests run the suite against it directly and through each proxy with toolgate in front,
and compare the results (tests/test_conformance.py).
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

import anyio
import mcp.types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage

#: A 1x1 red PNG, and a WAV of one silent sample.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c"
        "4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(
    b"RIFF"
    + (38).to_bytes(4, "little")
    + b"WAVEfmt "
    + (16).to_bytes(4, "little")
    + bytes.fromhex("01000100401f0000803e000002001000")
    + b"data"
    + (2).to_bytes(4, "little")
    + b"\x00\x00"
).decode()

#: The JSON Schema 2020-12 tool's input schema, as the scenario checks it is kept.
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


def build_server() -> MCPServer:
    server = MCPServer("toolgate-conformance-fixtures", version="1.0.0", log_level="WARNING")

    @server.tool(description="Returns simple text.")
    def test_simple_text() -> list[types.ContentBlock]:
        return [types.TextContent(type="text", text="This is a simple text response for testing.")]

    @server.tool(description="Returns an image.")
    def test_image_content() -> list[types.ContentBlock]:
        return [types.ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool(description="Returns audio.")
    def test_audio_content() -> list[types.ContentBlock]:
        return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    def embedded(uri: str, text: str, mime: str = "text/plain") -> types.EmbeddedResource:
        resource = types.TextResourceContents(uri=uri, mime_type=mime, text=text)
        return types.EmbeddedResource(type="resource", resource=resource)

    @server.tool(description="Returns an embedded resource.")
    def test_embedded_resource() -> list[types.ContentBlock]:
        return [embedded("test://embedded-resource", "This is an embedded resource content.")]

    @server.tool(description="Returns text, an image and a resource.")
    def test_multiple_content_types() -> list[types.ContentBlock]:
        data = json.dumps({"test": "data", "value": 123})
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mime_type="image/png"),
            embedded("test://mixed-content-resource", data, "application/json"),
        ]

    @server.tool(description="Logs three messages while it runs.")
    async def test_tool_with_logging(ctx: Context) -> str:
        await ctx.info("Tool execution started")
        await anyio.sleep(0.05)
        await ctx.info("Tool processing data")
        await anyio.sleep(0.05)
        await ctx.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool(description="Always fails.")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Reports its progress.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100)
            if step < 100:
                await anyio.sleep(0.05)
        return "Tool with progress executed successfully"

    @server.tool(description="Asks the client's model.")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=prompt)
        )
        # On the call's own stream (as elicitation below): without the request's id, the SDK
        # sends it on the client's GET stream, which may not be open yet (it is dropped).
        result = await ctx.session.create_message(
            [message], max_tokens=100, related_request_id=ctx.request_id
        )
        text = result.content.text if isinstance(result.content, types.TextContent) else ""
        return f"LLM response: {text}"

    async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        return await ctx.session.elicit_form(message, schema, ctx.request_id)

    @server.tool(description="Asks the user.")
    async def test_elicitation(message: str, ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await elicit(ctx, message, schema)
        return f"User response: action={result.action}, content={json.dumps(result.content)}"

    @server.tool(description="Asks the user, with defaults.")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {
                    "type": "string",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "default": True},
            },
        }
        result = await elicit(ctx, "Please review your defaults", schema)
        content = json.dumps(result.content)
        return f"Elicitation completed: action={result.action}, content={content}"

    @server.tool(description="Asks the user, with every kind of enum.")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        titled = [{"const": f"value{i}", "title": t} for i, t in ((1, "First"), (2, "Second"))]
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": titled},
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {"type": "array", "items": {"anyOf": titled}},
            },
        }
        result = await elicit(ctx, "Please choose", schema)
        content = json.dumps(result.content)
        return f"Elicitation completed: action={result.action}, content={content}"

    @server.tool(description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool(name: str = "") -> str:
        return f"hello {name}"

    @server.resource("test://static-text", mime_type="text/plain", description="Static text.")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png", description="A PNG.")
    def static_binary() -> bytes:
        return base64.b64decode(PNG)

    @server.resource(
        "test://watched-resource", mime_type="text/plain", description="Watched for updates."
    )
    def watched() -> str:
        return "Watched resource content."

    @server.resource(
        "test://template/{id}/data", mime_type="application/json", description="By id."
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.prompt(description="A simple prompt.")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @server.prompt(description="A prompt with arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt(description="A prompt with a resource.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        content = embedded(resourceUri, "Embedded resource content for testing.")
        return [
            UserMessage(content=content),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image.")
    def test_prompt_with_image() -> list[Message]:
        image = types.ImageContent(type="image", data=PNG, mime_type="image/png")
        return [UserMessage(content=image), UserMessage("Please analyze the image above.")]

    @server.completion()
    async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> Any:
        values = [v for v in ("paris", "park", "party") if v.startswith(argument.value)]
        return types.Completion(values=values, total=len(values), has_more=False)

    # The protocol's own methods the SDK's server leaves to a handler of one's own.
    lowlevel = server._lowlevel_server
    subscribed: set[str] = set()

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscribed.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscribed.discard(str(params.uri))
        return types.EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )

    # The tool's schema as the scenario gives it, not as the SDK derives one.
    listed = server.list_tools

    async def list_tools():  # type: ignore[no-untyped-def]
        tools = await listed()
        for tool in tools:
            if tool.name == "json_schema_2020_12_tool":
                tool.input_schema = SCHEMA_2020_12
        return tools

    server.list_tools = list_tools  # type: ignore[method-assign]
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = build_server().streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
